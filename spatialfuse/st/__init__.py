"""Transcriptomics preprocessing (QC, normalisation, highly variable genes)."""

from .preprocess import preprocess_st

__all__ = ["preprocess_st"]
