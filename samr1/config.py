"""What samr1's configuration dataclasses share.

:class:`samr1.engine.SamEngineConfig`, :class:`samr1.rewards.SamR1RewardConfig` and
:class:`samr1.train.TrainConfig` are dataclasses in the style of TRL's ``GRPOConfig``: every field carries
its help text in ``metadata["help"]`` (:func:`help_field`) and a bad value raises :class:`ConfigError`,
whose message names the field, the value and how to fix it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

__all__ = ["ConfigError", "help_field", "check_bool", "set_field", "with_overrides"]

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and says how to fix it.

    ``field`` is the field's name where one field is at fault (None for a whole-config problem). A
    ``ValueError``, so code that caught the constructors' ``ValueError`` keeps working.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def help_field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with ``help`` metadata (the flag's ``--help`` text); a list or dict default is
    copied per instance."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: True/False (numpy's too) or the ints 0/1; anything else (a string such as
    "false", which ``bool()`` would take as True) raises :class:`ConfigError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"{name} must be True or False, got {value!r}", field=name)


def set_field(config: Any, name: str, value: Any) -> None:
    """Store ``value`` in field ``name`` of a frozen config: its ``__post_init__`` keeps each value in its
    normalised form (a tuple for a list, a float for an int, ...), written once there."""
    object.__setattr__(config, name, value)


def with_overrides(cls: type[C], config: C | None, options: dict[str, Any], owner: str) -> C:
    """The effective config of ``owner(..., config=config, **options)``: ``config`` (default: ``cls()``)
    with every keyword in ``options`` overriding its field of the same name (``dataclasses.replace``, so
    the result is validated again). A keyword that is no field of ``cls`` raises ``TypeError`` listing
    the valid ones."""
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"{owner}: config must be a {cls.__name__}, got {type(config).__name__}; give other "
                        f"settings by keyword, e.g. {owner}(..., {next(iter(_names(cls)))}=...)")
    unknown = sorted(k for k in options if k not in _names(cls))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword arguments {unknown}; valid settings are the fields of "
                        f"{cls.__name__}: {_names(cls)}")
    if config is None:
        return cls(**options)
    return dataclasses.replace(config, **options) if options else config


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
