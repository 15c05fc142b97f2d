"""fewlabel.data: datalists and splits, the cache folder, and procedural demo phantoms."""

from fewlabel.data.cache import cache_dir
from fewlabel.data.datalist import (
    list_images,
    load_datalist,
    load_images,
    save_datalist,
    split_by_group,
    split_labelled,
)
from fewlabel.data.statistics import class_pixel_shares
from fewlabel.data.phantoms import PHANTOMS, make_phantom, phantom_info, register_phantom, write_demo_dataset

__all__ = [
    "class_pixel_shares",
    "cache_dir",
    "save_datalist",
    "load_datalist",
    "split_by_group",
    "split_labelled",
    "load_images",
    "list_images",
    "PHANTOMS",
    "register_phantom",
    "phantom_info",
    "make_phantom",
    "write_demo_dataset",
]
