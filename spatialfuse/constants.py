"""Every AnnData / MuData key the pipeline reads or writes, named once.

Modelled on squidpy's ``Key`` class: stages refer to ``Key.obsm.spatial`` rather than the bare
string, so a key is renamed in one place and a reader can find every use of it.
"""

from __future__ import annotations


class _Obsm:
    spatial = "spatial"  # coordinates in micrometres, in the sample's ST frame after align
    spatial_native = "spatial_native"  # MSI coordinates in its own frame (µm), kept after align

    @staticmethod
    def embedding(model: str) -> str:
        """Joint embedding written by a model, e.g. ``X_vae``."""
        return f"X_{model}"


class _Obs:
    x = "x"  # MSI: 1-based imzML pixel index (column)
    y = "y"  # MSI: 1-based imzML pixel index (row)
    tic = "tic"  # MSI: total ion current of the raw spectrum
    on_tissue = "on_tissue"  # MSI: pixel classified as tissue
    norm_factor = "norm_factor"  # MSI: per-pixel normalisation factor (median 1; inf = no signal)
    in_tissue = "in_tissue"  # ST: Space Ranger's in_tissue flag
    array_row = "array_row"
    array_col = "array_col"
    tissue_fraction = "tissue_fraction"  # ST: pooled Visium HD square, fraction of its bins in tissue
    total_counts = "total_counts"
    n_genes = "n_genes_by_counts"
    pct_mt = "pct_counts_mt"
    coverage = "msi_coverage"  # paired: fraction of the spot area covered by MSI pixels
    n_pixels = "msi_n_pixels"  # paired: number of MSI pixels touching the spot
    low_coverage = "msi_low_coverage"  # paired: coverage below align.min_coverage
    domain = "domain"
    truth_domain = "truth_domain"
    sample = "sample"
    condition = "condition"
    batch = "batch"


class _Var:
    mz = "mz"  # MSI feature centre, m/z
    highly_variable = "highly_variable"
    mt = "mt"
    gene_ids = "gene_ids"
    annotation = "annotation"  # MSI: all candidate metabolites, ';'-separated
    n_candidates = "n_candidates"
    matrix_peak = "matrix_peak"  # MSI: off-tissue (matrix/background) peak flag
    off_tissue_ratio = "off_tissue_ratio"  # MSI: mean off-tissue / mean on-tissue intensity
    smooth_strength = "graph_smooth_strength"  # impute: lambda of graph smoothing, per feature


class _Layers:
    counts = "counts"  # ST raw UMI counts
    intensity = "intensity"  # MSI raw intensities (before normalisation)

    @staticmethod
    def imputed(method: str) -> str:
        """Layer holding values imputed/denoised/predicted by ``method``; never overwrites X."""
        return f"imputed_{method}"


class _Uns:
    spatialfuse = "spatialfuse"  # dict of provenance and per-stage metadata
    spatial = "spatial"  # scanpy-style images and scalefactors (fullres unit = µm)


class _Mod:
    rna = "rna"
    msi = "msi"


class Key:
    """Namespaced key names: ``Key.obsm.spatial``, ``Key.layers.counts``, ``Key.mod.msi``..."""

    obsm = _Obsm
    obs = _Obs
    var = _Var
    layers = _Layers
    uns = _Uns
    mod = _Mod


#: Visium spot geometry (µm)
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_SPOT_PITCH_UM = 100.0

#: Model names the ``model`` stage understands.
MODELS = ("pca", "vae", "gnn", "transformer")
