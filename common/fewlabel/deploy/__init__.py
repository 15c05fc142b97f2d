"""MONAI Deploy App SDK applications for the fewlabel bundles (needs ``pip install fewlabel[deploy]``).

- :mod:`fewlabel.deploy.ct_app`: a DICOM study folder -> the CT series -> a CT bundle (PolyCL)
  -> DICOM SEG (highdicom, segments from the bundle's ``metadata.json``) and NIfTI.
- :mod:`fewlabel.deploy.frames_app`: a folder of frames or a video -> any 2D bundle -> masks and
  overlays (and SLiPPA's landmark point lists), with a ``results.json`` listing them.
- :mod:`fewlabel.deploy.operators`: the operators both apps are made of.

Both run as ``python -m fewlabel.deploy.<app> -i INPUT -o OUTPUT -m MODEL`` or with the Holoscan
variables ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH``; ``MODEL``
is a bundle folder (``configs/`` + ``models/model.ts`` or ``model.pt``) or the TorchScript file
``python -m monai.bundle ckpt_export`` writes (configs embedded). The submodules import the SDK
(``monai.deploy``, ``holoscan``); this package itself imports nothing of them.

The SDK lives in an environment of its own (:mod:`fewlabel.deploy.env`, built on first use): run as
``python -m fewlabel.deploy[.<app>]`` by an interpreter without it, this package runs the same
command again in that environment.
"""

import sys


def _run_as_module() -> bool:
    """Whether Python is locating ``python -m fewlabel.deploy[.<app>]`` (``sys.argv[0]`` is ``-m`` meanwhile)."""
    argv = getattr(sys, "orig_argv", [])
    return sys.argv[:1] == ["-m"] and "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("fewlabel.deploy")


if _run_as_module():
    from fewlabel.deploy.env import reexec_in_deploy_env

    reexec_in_deploy_env()
