"""Stage 3: denoising within each modality and cross-modal prediction, scored on held-out data."""

from .crossmodal import baseline_fold, crossmodal_cv, model_fold
from .cv import auto_buffer_um, spatial_blocks, training_masks
from .scores import feature_scores, masked_ssim
from .smooth import (
    choose_strength,
    graph_smooth,
    heldout_neighbour_prediction,
    knn_smooth,
    loo_neighbour_prediction,
)
from .stage import run_impute
from .unmeasured import predict_unmeasured

__all__ = [
    "auto_buffer_um",
    "baseline_fold",
    "choose_strength",
    "crossmodal_cv",
    "feature_scores",
    "graph_smooth",
    "heldout_neighbour_prediction",
    "knn_smooth",
    "loo_neighbour_prediction",
    "masked_ssim",
    "model_fold",
    "predict_unmeasured",
    "run_impute",
    "spatial_blocks",
    "training_masks",
]
