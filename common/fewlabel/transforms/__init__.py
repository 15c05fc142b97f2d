"""MONAI-style transforms (array versions with dictionary twins) used by the bundles, and the batched
random augmentations the engines apply on the device (:mod:`fewlabel.transforms.batched`)."""

from .threshold import (
    METHODS,
    ThresholdMask,
    ThresholdMaskd,
    adaptive_threshold,
    batch_histogram,
    ght_threshold,
    otsu_threshold,
    threshold_masks,
    to_grayscale,
)
from .io import (
    CheckSameSize2Dd,
    LoadImage2D,
    LoadImage2Dd,
    LoadLabel2D,
    LoadLabel2Dd,
    SaveMask2Dd,
    overlay_mask,
    read_image_2d,
)
from .masking import MaskCorruption, MaskCorruptiond, mask_ratio
from .pretext import GreyCorruption, centre_square, rotate_batch
from .rotation import RandRotateFilld, background_index
from .landmarks import SaveLandmarksd, landmarks_record, render_landmarks, scale_paths
from .ct import (
    CTWindow,
    CTWindowd,
    KeepMiddleSlices,
    KeepMiddleSlicesd,
    LoadCTSlice,
    LoadCTSliced,
    LoadCTVolume,
    LoadCTVolumed,
    NotHUWarning,
)
from .monailabel import MonaiLabelOutput, MonaiLabelOutputd
from .ct_io import (
    SaveCTSegmentation,
    SaveCTSegmentationd,
    Segment,
    restore_original_orientation,
    save_dicom_seg,
    save_nifti_segmentation,
    segments_from_metadata,
)
from .batched import (
    GeometricParams,
    PairedBatchAugmentation,
    apply_geometry,
    draw_bernoulli,
    draw_geometry,
    draw_uniform,
    gaussian_blur,
    grey,
    random_colour_jitter,
)
from .placeholder import PlaceholderLabeld
