"""Metabolite–gene association across spots."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..constants import Key
from ..metrics import bh_fdr


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)


def associate(rna: ad.AnnData, msi: ad.AnnData, *, n_genes: int = 500,
              method: str = "pearson") -> pd.DataFrame:
    """Correlation of every metabolite with the ``n_genes`` most variable genes across spots.

    Baseline (plain Pearson, parametric p-value, BH FDR): spatial autocorrelation inflates it.
    Ambiguous annotations are carried through in the ``annotation`` column.
    """
    if method != "pearson":
        raise ValueError(f"unknown association method {method!r}")
    Xr = _dense(rna.X)
    var = Xr.var(0)
    g_idx = np.argsort(-var)[: min(n_genes, rna.n_vars)]
    G = Xr[:, g_idx]
    M = _dense(msi.X)
    n = G.shape[0]
    Gs = (G - G.mean(0)) / np.where(G.std(0) > 0, G.std(0), 1)
    Ms = (M - M.mean(0)) / np.where(M.std(0) > 0, M.std(0), 1)
    R = Ms.T @ Gs / n  # metabolites × genes
    t = R * np.sqrt((n - 2) / np.clip(1 - R**2, 1e-12, None))
    P = 2 * stats.t.sf(np.abs(t), n - 2)
    mi, gi = np.meshgrid(np.arange(M.shape[1]), np.arange(len(g_idx)), indexing="ij")
    ann = msi.var[Key.var.annotation].to_numpy() if Key.var.annotation in msi.var else \
        np.array([""] * msi.n_vars)
    df = pd.DataFrame({
        "metabolite_feature": np.asarray(msi.var_names)[mi.ravel()],
        "mz": msi.var[Key.var.mz].to_numpy()[mi.ravel()],
        "annotation": ann[mi.ravel()],
        "gene": np.asarray(rna.var_names)[g_idx][gi.ravel()],
        "r": R.ravel(), "pval": P.ravel(), "method": method,
    })
    df["qval"] = bh_fdr(df["pval"].to_numpy())
    return df.sort_values("pval").reset_index(drop=True)
