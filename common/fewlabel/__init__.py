"""fewlabel: MONAI bundles for medical image segmentation with few labels.

The package mirrors MONAI's taxonomy: ``fewlabel.data`` (demo phantoms, dataset adapters,
datalists), ``fewlabel.transforms``, ``fewlabel.losses``, ``fewlabel.metrics``,
``fewlabel.networks``, ``fewlabel.handlers`` (ignite handlers), ``fewlabel.engines``, ``fewlabel.sam`` and
``fewlabel.postprocess``.
Bundle configs reference these as ``fewlabel.<module>.<name>``.
"""

__version__ = "0.1.0"

import importlib as _importlib

_SUBMODULES = (
    "bundle",
    "data",
    "engines",
    "errors",
    "handlers",
    "losses",
    "metrics",
    "networks",
    "postprocess",
    "sam",
    "transforms",
)


def __getattr__(name: str):
    """Import submodules on first use, so ``import fewlabel`` then ``fewlabel.networks...`` works
    (bundle configs import only ``fewlabel``)."""
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _running_bundle_cli() -> bool:
    """True under ``python -m monai.bundle ...`` (its errors then print as one line, see ``fewlabel.errors``)."""
    import os
    import sys

    return sys.argv[0].endswith(os.path.join("monai", "bundle", "__main__.py"))


if _running_bundle_cli():
    from fewlabel.errors import install_error_hook as _install_error_hook

    _install_error_hook()
