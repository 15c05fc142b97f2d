"""Segment Anything as a frozen teacher: prompts from a student's probabilities, pseudo-labels,
and a cache of image embeddings.

- :mod:`fewlabel.sam.prompts`: point / box / mask prompts from a probability map (SAM mining, 2.3).
- :mod:`fewlabel.sam.teacher`: :func:`build_sam_teacher` (SAM / MedSAM checkpoints, tiny test
  models) and :class:`SamTeacher` (embed, predict, pseudo_label).
- :mod:`fewlabel.sam.checkpoints`: default SAM / SAM 2 checkpoint paths of ``sam_model_type`` / ``sam2_config``.
- :mod:`fewlabel.sam.model_type`: the SAM type (ViT-B/L/H) a checkpoint holds (``sam_model_type="auto"``).
- :mod:`fewlabel.sam.cache`: :class:`EmbeddingCache` (memory / disk, keyed by image + weights).
- :mod:`fewlabel.sam.inferer`: fast (student) and accurate (student -> SAM) inference.
- :mod:`fewlabel.sam.box_refine`: PolyCL's refinement, one SAM box prompt per connected component.
- :mod:`fewlabel.sam.propagate`: SAM 2 propagation of one annotated slice through a volume (import it
  directly: it imports ``sam2`` and Hydra, which the rest of the package does not need).
"""

from .box_refine import MERGE_MODES, REFINED_LOGIT, SamBoxRefineInferer, component_boxes, refine_with_sam
from .cache import EmbeddingCache, KeySource
from .checkpoints import (
    SAM2_CHECKPOINT_FILES,
    SAM_CHECKPOINT_FILES,
    large_files_entry,
    large_files_hint,
    sam2_checkpoint_path,
    sam_checkpoint_path,
)
from .model_type import SAM_ENCODER_SHAPES, infer_sam_model_type, sam_model_type_of
from .prompts import (
    MASK_PROMPT_EPS,
    MODES,
    PREPROCESSING_FRAMES,
    PromptMode,
    SamPrompt,
    SamPrompter,
    make_prompt,
    make_prompts,
    mask_bounding_box,
    mask_prompt_from_probability,
    prompts_from_probability,
    top_probability_points,
)
from .teacher import (
    MODEL_TYPES,
    NO_PROMPT_LOGIT,
    PREPROCESSING,
    TINY_SAM_DEFAULTS,
    SamTeacher,
    build_sam_teacher,
    resolve_preprocessing,
    build_tiny_sam,
    save_tiny_sam,
    tiny_sam_checkpoint,
)
from .inferer import INFERENCE_MODES, SamRefineInferer, build_inferer



def tiny_sam2_checkpoint(path: str, seed: int = 0) -> str:
    """:func:`fewlabel.sam.propagate.tiny_sam2_checkpoint` (a tiny random SAM 2 file for tests and demos),
    importable without loading ``sam2`` until it is called."""
    from .propagate import tiny_sam2_checkpoint as make

    return make(path, seed=seed)


__all__ = [
    "tiny_sam2_checkpoint",
    "EmbeddingCache",
    "KeySource",
    "SAM_CHECKPOINT_FILES",
    "SAM2_CHECKPOINT_FILES",
    "sam_checkpoint_path",
    "sam2_checkpoint_path",
    "large_files_entry",
    "large_files_hint",
    "SAM_ENCODER_SHAPES",
    "infer_sam_model_type",
    "sam_model_type_of",
    "MASK_PROMPT_EPS",
    "MODES",
    "PREPROCESSING_FRAMES",
    "PromptMode",
    "SamPrompt",
    "SamPrompter",
    "make_prompt",
    "make_prompts",
    "mask_bounding_box",
    "mask_prompt_from_probability",
    "prompts_from_probability",
    "top_probability_points",
    "MODEL_TYPES",
    "NO_PROMPT_LOGIT",
    "PREPROCESSING",
    "TINY_SAM_DEFAULTS",
    "SamTeacher",
    "build_sam_teacher",
    "resolve_preprocessing",
    "build_tiny_sam",
    "save_tiny_sam",
    "tiny_sam_checkpoint",
    "INFERENCE_MODES",
    "SamRefineInferer",
    "build_inferer",
    "MERGE_MODES",
    "REFINED_LOGIT",
    "SamBoxRefineInferer",
    "component_boxes",
    "refine_with_sam",
]
