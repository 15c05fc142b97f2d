"""fewlabel: MONAI bundles for medical image segmentation with few labels.

The package mirrors MONAI's taxonomy: ``fewlabel.data`` (demo phantoms, dataset adapters,
datalists), ``fewlabel.transforms``, ``fewlabel.losses``, ``fewlabel.metrics``,
``fewlabel.networks``, ``fewlabel.engines``, ``fewlabel.sam`` and ``fewlabel.postprocess``.
Bundle configs reference these as ``fewlabel.<module>.<name>``.
"""

__version__ = "0.1.0"
