"""Experiment trackers: ``report_to`` takes any integration transformers supports.

sftlab keeps no list of its own: the names come from transformers' integration table
(``tensorboard``, ``wandb``, ``trackio``, ``mlflow``, ``comet_ml``, ...), and each named tracker's
package must be installed. Both are checked when the config is loaded, before any preprocessing, so a
typo costs a second. Credentials come from the environment only (``WANDB_API_KEY``, ``HF_TOKEN``, ...);
``WANDB_MODE=offline`` and trackio's local store work without a network.
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import ConfigError, suggest


def validate_report_to(report_to: Any) -> None:
    """Integration names as transformers knows them, each with its package installed: checked now,
    before any preprocessing, the way the Trainer will check them."""
    from transformers.integrations import get_reporting_integration_callbacks

    if report_to is None or report_to == "none" or report_to == ["none"]:
        return
    if not isinstance(report_to, (str, list)):
        raise ConfigError(f"report_to must be a name or a list of names, got {report_to!r}")
    try:  # transformers' table of integrations, not a list of sftlab's
        callbacks = get_reporting_integration_callbacks(report_to)
    except ValueError as e:
        names = str(e).split("only ", 1)[-1].replace(" are supported.", "")
        bad = next((r for r in ([report_to] if isinstance(report_to, str) else report_to)
                    if r not in names.split(", ")), str(report_to))
        raise ConfigError(f"report_to: unknown integration '{bad}'{suggest(str(bad), names.split(', '))} "
                          f"(transformers supports: {names}, none, all)") from None
    from transformers.integrations import integration_utils

    for cb in callbacks:  # the package behind each, by transformers' own availability check
        name = next(k for k, v in integration_utils.INTEGRATION_TO_CALLBACK.items() if v is cb)
        available = getattr(integration_utils, f"is_{name}_available", None)
        if available is not None and not available():
            pkg = {"tensorboard": "tensorboard", "comet_ml": "comet-ml", "azure_ml": "azureml-core"}.get(name, name)
            raise ConfigError(f"report_to: {name} needs the {pkg} package (pip install {pkg})")
