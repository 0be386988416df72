"""YAML as users write it in configs: ``5e-3`` and ``1e-6`` are numbers.

PyYAML follows YAML 1.1, where a float needs a dot (``5.0e-3``): ``lr: 1e-6`` is read as the STRING
``"1e-6"``, and a float field then fails with a message about the value rather than the spelling. YAML 1.2
(and JSON) read it as a number; so does :func:`safe_load` here, which is PyYAML's safe loader plus that one
rule. Nothing else changes (``true`` is a bool, ``[a, b]`` a list, ``1_000`` stays PyYAML's reading).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["safe_load"]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-6``, ``5E3``, ``-2e+1``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def safe_load(stream: Any) -> Any:
    """``yaml.safe_load`` with ``1e-6`` read as a float (see the module docstring)."""
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass: safe
