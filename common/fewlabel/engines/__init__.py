"""Engine pieces: prepare-batch objects that make inputs and targets on the device (denoising pairs,
threshold pseudo-labels, SAM knowledge mining, SimCLR views, PolyCL triplets), SimCLR's contrastive
encoder, slice-by-slice volume inference, inference at any frame size (pad to the network's stride,
crop back), the video runner and the scoring of prediction folders made elsewhere.

Names that moved to the layer of their kind (losses, transforms, data, handlers) are imported here too,
so ``fewlabel.engines.<name>`` keeps working for them.
"""

from fewlabel.data.datalist import mixed_items
from fewlabel.data.triplets import TripletDataset, TripletSampler
from fewlabel.handlers.checkpoint_loader import CheckpointLoader, missing_weights_message
from fewlabel.handlers.landmark_evaluation import LandmarkEvaluation, stage_table
from fewlabel.handlers.pseudo_label_stats import MiningStatsHandler, PseudoLabelStatsHandler
from fewlabel.handlers.training_state import TrainingState
from fewlabel.losses.mining import MiningLoss
from fewlabel.transforms.placeholder import PlaceholderLabeld

from .denoising import DenoisingPairs
from .folder_inference import FolderEvaluator
from .padded_inference import DivisiblePadInferer, network_stride
from .polycl import SupConPairs, TripletBatch
from .prediction_folder import PredictionFolderScorer
from .pseudo_labels import ThresholdPseudoLabels
from .rotation import ImagesOnly, RotationBatch
from .sam_mining import MinedBatches, load_mined_datalist, mine_pseudo_labels
from .simclr import ContrastiveEncoder, SimCLRPairs
from .slice_inference import SliceBySliceInferer, VolumeBatch, build_volume_inferer
from .video_landmarks import run_video

__all__ = [
    "ImagesOnly",
    "RotationBatch",
    "FolderEvaluator",
    "PredictionFolderScorer",
    "DivisiblePadInferer",
    "network_stride",
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
    "load_mined_datalist",
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
