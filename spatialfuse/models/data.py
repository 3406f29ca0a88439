"""Model inputs: per-modality standardised feature matrices on the paired spots."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..constants import Key


@dataclass
class ModelInputs:
    rna: np.ndarray  # spots × HVG, log-normalised then standardised (float32)
    msi: np.ndarray  # spots × m/z, log-normalised then standardised (float32)
    rna_counts: np.ndarray | None  # spots × HVG raw counts, for count likelihoods
    xy: np.ndarray  # spots × 2, µm
    obs_names: list[str]
    rna_features: list[str]
    msi_features: list[str]


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _standardise(X: np.ndarray) -> np.ndarray:
    mu, sd = X.mean(0), X.std(0)
    return ((X - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def prepare_inputs(rna: ad.AnnData, msi: ad.AnnData, n_top_genes: int | None = None) -> ModelInputs:
    """Select highly variable genes (at most ``n_top_genes``), densify and standardise."""
    if list(rna.obs_names) != list(msi.obs_names):
        raise ValueError("rna and msi must be paired on the same spots")
    hv = rna.var[Key.var.highly_variable].to_numpy() if Key.var.highly_variable in rna.var else \
        np.ones(rna.n_vars, bool)
    idx = np.nonzero(hv)[0]
    if n_top_genes is not None and idx.size > n_top_genes:
        disp = rna.var["dispersions_norm"].to_numpy()[idx] if "dispersions_norm" in rna.var else \
            _dense(rna.X[:, idx]).var(0)
        idx = idx[np.argsort(-np.nan_to_num(disp, nan=-np.inf))[:n_top_genes]]
        idx.sort()
    Xr = _dense(rna.X[:, idx]).astype(np.float64)
    counts = _dense(rna.layers[Key.layers.counts][:, idx]).astype(np.float32) \
        if Key.layers.counts in rna.layers else None
    Xm = _dense(msi.X).astype(np.float64)
    return ModelInputs(
        rna=_standardise(Xr), msi=_standardise(Xm), rna_counts=counts,
        xy=np.asarray(rna.obsm[Key.obsm.spatial], float), obs_names=list(rna.obs_names),
        rna_features=list(rna.var_names[idx]), msi_features=list(msi.var_names),
    )
