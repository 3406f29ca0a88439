"""Stage 2: register MSI onto the ST frame and match resolutions (pixels → spots)."""

from .aggregate import aggregate, overlap_weights
from .register import register_auto, register_landmarks
from .stage import run_align
from .transform import DisplacementGrid, ThinPlateSpline, Transform, fit_affine, similarity_matrix

__all__ = [
    "aggregate",
    "overlap_weights",
    "register_auto",
    "register_landmarks",
    "run_align",
    "DisplacementGrid",
    "ThinPlateSpline",
    "Transform",
    "fit_affine",
    "similarity_matrix",
]
