"""Stage 2: register MSI onto the ST frame and match resolutions (pixels → spots)."""

from .aggregate import aggregate, overlap_weights
from .register import register_landmarks, register_masks
from .stage import run_align
from .transform import DisplacementGrid, Transform, fit_affine, similarity_matrix

__all__ = [
    "aggregate",
    "overlap_weights",
    "register_landmarks",
    "register_masks",
    "run_align",
    "DisplacementGrid",
    "Transform",
    "fit_affine",
    "similarity_matrix",
]
