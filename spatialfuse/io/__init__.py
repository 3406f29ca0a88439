"""Readers and writers at the edges of the pipeline (all coordinates leave here in micrometres)."""

from .imzml import ImzMLStreamWriter, read_imzml, write_imzml
from .spaceranger import read_spaceranger, write_spaceranger, write_visium_hd_bins
from .h5ad import read_msi_h5ad, read_st_h5ad
from .paired import read_paired, write_paired

__all__ = [
    "ImzMLStreamWriter",
    "read_imzml",
    "write_imzml",
    "read_spaceranger",
    "write_spaceranger",
    "write_visium_hd_bins",
    "read_st_h5ad",
    "read_msi_h5ad",
    "read_paired",
    "write_paired",
]
