"""Names that moved to the layer of their kind (DESIGN.md, Layout) still import from where they used to be."""

from __future__ import annotations

import importlib

import pytest

MOVED = [  # (old module, name, new module)
    ("fewlabel.engines", "MiningLoss", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "MiningLoss", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "pack_targets", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "unpack_targets", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "dice_bce_per_image", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "ROLE_PSEUDO", "fewlabel.losses.mining"),
    ("fewlabel.engines.sam_mining", "GeometricParams", "fewlabel.transforms.batched"),
    ("fewlabel.engines.sam_mining", "draw_geometry", "fewlabel.transforms.batched"),
    ("fewlabel.engines.sam_mining", "apply_geometry", "fewlabel.transforms.batched"),
    ("fewlabel.engines.simclr", "random_colour_jitter", "fewlabel.transforms.batched"),
    ("fewlabel.engines.simclr", "grey", "fewlabel.transforms.batched"),
    ("fewlabel.engines", "PlaceholderLabeld", "fewlabel.transforms.placeholder"),
    ("fewlabel.engines.sam_mining", "PlaceholderLabeld", "fewlabel.transforms.placeholder"),
    ("fewlabel.engines", "mixed_items", "fewlabel.data.datalist"),
    ("fewlabel.engines.sam_mining", "mixed_items", "fewlabel.data.datalist"),
    ("fewlabel.engines", "TripletSampler", "fewlabel.data.triplets"),
    ("fewlabel.engines.polycl", "TripletSampler", "fewlabel.data.triplets"),
    ("fewlabel.engines", "TripletDataset", "fewlabel.data.triplets"),
    ("fewlabel.engines.polycl", "TripletDataset", "fewlabel.data.triplets"),
    ("fewlabel.engines", "CheckpointLoader", "fewlabel.handlers.checkpoint_loader"),
    ("fewlabel.engines.checkpoint", "CheckpointLoader", "fewlabel.handlers.checkpoint_loader"),
    ("fewlabel.engines", "missing_weights_message", "fewlabel.handlers.checkpoint_loader"),
    ("fewlabel.engines", "PseudoLabelStatsHandler", "fewlabel.handlers.pseudo_label_stats"),
    ("fewlabel.engines.pseudo_labels", "PseudoLabelStatsHandler", "fewlabel.handlers.pseudo_label_stats"),
    ("fewlabel.engines", "MiningStatsHandler", "fewlabel.handlers.pseudo_label_stats"),
    ("fewlabel.engines.sam_mining", "MiningStatsHandler", "fewlabel.handlers.pseudo_label_stats"),
    ("fewlabel.metrics", "SegmentationReport", "fewlabel.handlers.segmentation_report"),
    ("fewlabel.metrics.report", "SegmentationReport", "fewlabel.handlers.segmentation_report"),
    ("fewlabel.metrics.report", "ReportHandler", "fewlabel.handlers.report"),
    ("fewlabel.metrics.report", "example_arrays", "fewlabel.handlers.report"),
    ("fewlabel.metrics.report", "save_examples", "fewlabel.handlers.report"),
    ("fewlabel.metrics", "VolumeReport", "fewlabel.handlers.volume_report"),
    ("fewlabel.metrics.volume", "VolumeReport", "fewlabel.handlers.volume_report"),
    ("fewlabel.engines", "TrainingState", "fewlabel.handlers.training_state"),
    ("fewlabel.engines.resume", "TrainingState", "fewlabel.handlers.training_state"),
    ("fewlabel.engines.resume", "random_components", "fewlabel.handlers.training_state"),
    ("fewlabel.engines", "LandmarkEvaluation", "fewlabel.handlers.landmark_evaluation"),
    ("fewlabel.engines.landmarks", "LandmarkEvaluation", "fewlabel.handlers.landmark_evaluation"),
    ("fewlabel.engines", "stage_table", "fewlabel.handlers.landmark_evaluation"),
    ("fewlabel.engines", "ContrastiveEncoder", "fewlabel.networks.contrastive"),
    ("fewlabel.engines.simclr", "ContrastiveEncoder", "fewlabel.networks.contrastive"),
    ("fewlabel.transforms.io", "NONFINITE_POLICIES", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.io", "DEFAULT_MAX_PIXELS", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.io", "mask_output_name", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.io", "overlay_output_name", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.io", "read_image_2d", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.io", "overlay_mask", "fewlabel.data.image_2d"),
    ("fewlabel.transforms", "read_image_2d", "fewlabel.data.image_2d"),
    ("fewlabel.transforms", "overlay_mask", "fewlabel.data.image_2d"),
    ("fewlabel.transforms.ct_io", "restore_original_orientation", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "save_nifti_segmentation", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "save_dicom_seg", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "Segment", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "segments_from_metadata", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "AFFINE_ATOL", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms.ct_io", "DICOM_SEG_SERIES_NUMBER", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms", "restore_original_orientation", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms", "save_nifti_segmentation", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms", "save_dicom_seg", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms", "Segment", "fewlabel.data.segmentation_writers"),
    ("fewlabel.transforms", "segments_from_metadata", "fewlabel.data.segmentation_writers"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_moved_name_is_the_same_object_at_its_old_place(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_an_unknown_name_is_still_an_attribute_error():
    for module in ("fewlabel.metrics", "fewlabel.metrics.report", "fewlabel.metrics.volume",
                   "fewlabel.transforms.ct_io"):
        with pytest.raises(AttributeError, match="NoSuchReport"):
            _ = importlib.import_module(module).NoSuchReport
