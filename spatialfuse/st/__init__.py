"""Transcriptomics preprocessing (QC, normalisation, highly variable genes)."""

from .pool import pool_visium_hd, truth_for_squares
from .preprocess import preprocess_st

__all__ = ["pool_visium_hd", "preprocess_st", "truth_for_squares"]
