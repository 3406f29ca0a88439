"""Stage 3: denoising within each modality and cross-modal prediction, scored on held-out data."""

from .crossmodal import predict_crossmodal_cv
from .cv import spatial_blocks
from .smooth import knn_smooth, loo_neighbour_prediction
from .stage import run_impute

__all__ = [
    "predict_crossmodal_cv",
    "spatial_blocks",
    "knn_smooth",
    "loo_neighbour_prediction",
    "run_impute",
]
