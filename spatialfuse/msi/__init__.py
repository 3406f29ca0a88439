"""MSI preprocessing: normalisation, tissue mask, matrix-peak flags, m/z annotation."""

from .annotate import annotate_mz, load_metabolite_table
from .preprocess import flag_matrix_peaks, normalise, preprocess_msi, tissue_mask

__all__ = [
    "annotate_mz",
    "load_metabolite_table",
    "flag_matrix_peaks",
    "normalise",
    "preprocess_msi",
    "tissue_mask",
]
