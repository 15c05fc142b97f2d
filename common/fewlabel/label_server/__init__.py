"""Annotation assistance: the bundles served by a local MONAI Label server (``fewlabel label-server``).

- :mod:`.env`: MONAI Label's own virtual environment (built once, reused);
- :mod:`.app`: the stock ``monaibundle`` app with this repository's bundles and their weights
  (or the weights ``make demo`` trained);
- :mod:`.activelearning` (MONAI Label env) and :mod:`.scores`: which image to label next, per bundle;
- :mod:`.server`: start, wait for and stop the server;
- :mod:`.training`: ``/train/<bundle>`` runs the bundle's own protocol on the labelled and unlabelled images.
"""

from .env import default_env_dir, ensure_env, env_requirements

__all__ = ["default_env_dir", "ensure_env", "env_requirements"]
