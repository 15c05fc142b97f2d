"""Engine pieces: prepare-batch functions that make targets on the device, checkpoint handling,
landmark evaluation and video inference, SimCLR pre-training, SAM knowledge mining, PolyCL triplets and
slice-by-slice volume inference."""

from .denoising import DenoisingPairs
from .checkpoint import CheckpointLoader, missing_weights_message
from .landmarks import LandmarkEvaluation, stage_table
from .pseudo_labels import PseudoLabelStatsHandler, ThresholdPseudoLabels
from .sam_mining import MinedBatches, MiningLoss, MiningStatsHandler, PlaceholderLabeld, mine_pseudo_labels, mixed_items
from .simclr import ContrastiveEncoder, SimCLRPairs
from .polycl import SupConPairs, TripletBatch, TripletDataset, TripletSampler
from .resume import TrainingState
from .slice_inference import SliceBySliceInferer, VolumeBatch, build_volume_inferer
from .video_landmarks import run_video

__all__ = [
    "DenoisingPairs",
    "CheckpointLoader",
    "PseudoLabelStatsHandler",
    "ThresholdPseudoLabels",
    "missing_weights_message",
    "LandmarkEvaluation",
    "stage_table",
    "run_video",
    "ContrastiveEncoder",
    "SimCLRPairs",
    "MinedBatches",
    "MiningLoss",
    "MiningStatsHandler",
    "PlaceholderLabeld",
    "mine_pseudo_labels",
    "mixed_items",
    "SupConPairs",
    "TripletBatch",
    "TripletDataset",
    "TripletSampler",
    "SliceBySliceInferer",
    "VolumeBatch",
    "build_volume_inferer",
    "TrainingState",
]
