"""fewlabel.data: datalists and splits, checks of a datalist's files before training
(``check_datalist_files``), the cache folder, procedural demo phantoms, readers and writers (2D
images: :mod:`.image_2d`; CT volumes: :mod:`.ct`; NIfTI and DICOM SEG segmentations:
:mod:`.segmentation_writers`), CT middle slices and slice index, and PolyCL's contrastive example
selection (``select_examples``) with its triplet sampler and dataset (``TripletSampler``,
``TripletDataset``). The MONAI transforms in :mod:`fewlabel.transforms` wrap these readers and writers."""

from fewlabel.data.cache import cache_dir
from fewlabel.data.collate import IGNORE_LABEL, PadCollate
from fewlabel.data.checks import check_datalist, check_datalist_files, read_file_shape
from fewlabel.data.datalist import (
    check_training_data,
    list_images,
    load_datalist,
    load_images,
    mixed_items,
    save_datalist,
    split_by_group,
    split_labelled,
)
from fewlabel.data.ct import (
    CTPhantom,
    SliceIndex,
    build_slice_index,
    dicom_series_files,
    list_ct_volumes,
    load_ct_volume,
    make_ct_phantom,
    middle_slices,
    organ_flags,
    write_ct_phantom,
    write_ct_phantom_dicom,
)
from fewlabel.data.ct_slices import cache_ct_slices, ct_slice_records, slice_tables, write_ct_demo_dataset
from fewlabel.data.contrastive_selection import STRATEGIES, Triplets, select_examples
from fewlabel.data.triplets import TripletDataset, TripletSampler
from fewlabel.data.statistics import class_pixel_shares
from fewlabel.data.files import atomic_write, refuse_shared_outputs
from fewlabel.data.image_2d import mask_output_name, overlay_mask, overlay_output_name, read_image_2d, write_png
from fewlabel.data.segmentation_writers import (
    Segment,
    restore_original_orientation,
    save_dicom_seg,
    save_nifti_and_dicom_seg,
    save_nifti_segmentation,
    segments_from_metadata,
)
from fewlabel.data.inputs import FAILED_KEY, InputsDataset, collate_inputs
from fewlabel.data.phantoms import PHANTOMS, make_phantom, phantom_info, register_phantom, write_demo_dataset

__all__ = [
    "IGNORE_LABEL",
    "PadCollate",
    "FAILED_KEY",
    "InputsDataset",
    "collate_inputs",
    "atomic_write",
    "refuse_shared_outputs",
    "read_image_2d",
    "overlay_mask",
    "write_png",
    "mask_output_name",
    "overlay_output_name",
    "Segment",
    "segments_from_metadata",
    "restore_original_orientation",
    "save_nifti_segmentation",
    "save_dicom_seg",
    "save_nifti_and_dicom_seg",
    "check_training_data",
    "check_datalist",
    "check_datalist_files",
    "read_file_shape",
    "class_pixel_shares",
    "cache_dir",
    "save_datalist",
    "load_datalist",
    "split_by_group",
    "split_labelled",
    "load_images",
    "list_images",
    "mixed_items",
    "PHANTOMS",
    "register_phantom",
    "phantom_info",
    "make_phantom",
    "write_demo_dataset",
    "STRATEGIES",
    "Triplets",
    "select_examples",
    "TripletSampler",
    "TripletDataset",
    "CTPhantom",
    "SliceIndex",
    "build_slice_index",
    "dicom_series_files",
    "load_ct_volume",
    "make_ct_phantom",
    "middle_slices",
    "write_ct_phantom",
    "write_ct_phantom_dicom",
    "organ_flags",
    "list_ct_volumes",
    "cache_ct_slices",
    "ct_slice_records",
    "slice_tables",
    "write_ct_demo_dataset",
]
