"""Post-processing of predictions: SLiPPA's landmark curves (:mod:`fewlabel.postprocess.landmarks`)."""

from .landmarks import (
    CLASS_NAMES,
    LandmarkPostprocess,
    LandmarkPostprocessd,
    LandmarkPostprocessor,
    LandmarkResult,
    connect_fragments,
    draw_paths,
    field_of_view,
    rdp,
    remove_outside_fov,
    remove_stray_ligament,
    sample_points,
    skeletonize,
    trace_paths,
)

__all__ = [
    "CLASS_NAMES",
    "LandmarkPostprocess",
    "LandmarkPostprocessd",
    "LandmarkPostprocessor",
    "LandmarkResult",
    "connect_fragments",
    "draw_paths",
    "field_of_view",
    "rdp",
    "remove_outside_fov",
    "remove_stray_ligament",
    "sample_points",
    "skeletonize",
    "trace_paths",
]
