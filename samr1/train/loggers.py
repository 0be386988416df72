"""``--report-to``: the loggers transformers' Trainer knows, checked to be installed before anything loads.

transformers only finds out that a logger is missing when the trainer is built (after the data and the models
have loaded) and then raises deep inside its callbacks; :func:`check_loggers` says it up front, on one line,
with the install command.
"""

from __future__ import annotations

import difflib

from samr1.config import ConfigError

__all__ = ["INSTALL", "check_loggers"]

# logger name -> the pip package that brings it (the names of transformers' INTEGRATION_TO_CALLBACK)
INSTALL: dict[str, str] = {
    "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
    "comet_ml": "comet_ml", "neptune": "neptune", "clearml": "clearml", "dagshub": "dagshub",
    "dvclive": "dvclive", "swanlab": "swanlab", "codecarbon": "codecarbon", "azure_ml": "azureml-core",
    "flyte": "flytekit", "kubeflow": "kubeflow-training",
}


def check_loggers(names: list[str]) -> list[str]:
    """Raise :class:`ConfigError` when a name is not a transformers logger or its package is not installed;
    return ``names``. ``all`` (every installed logger) is accepted as transformers accepts it."""
    from transformers.integrations import integration_utils as iu

    known = dict(iu.INTEGRATION_TO_CALLBACK)
    available = set(iu.get_available_reporting_integrations())
    for name in names:
        if name == "all":
            continue
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"report_to: {name!r} is not a logger transformers knows; {hint}choose from "
                              f"{sorted(known)} (or none)", field="report_to")
        if name not in available:
            pkg = INSTALL.get(name, name)
            extra = " (samr1[train] carries it)" if name == "tensorboard" else ""
            raise ConfigError(f"report_to: {name} is not installed: pip install {pkg}{extra}", field="report_to")
    return names
