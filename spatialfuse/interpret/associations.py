"""Metabolite–gene association across spots, tested against a null that keeps spatial
autocorrelation (see :mod:`.spatial_null`).

Default (``method="spatial"``): for every metabolite × gene pair,

1. both maps are centred within each spatial domain (``adjust_domains``), so the association
   is the part not explained by the domains (the within-domain, pooled association);
2. both are smoothed over the spot's ``smooth_k`` nearest neighbours (row-standardised sparse
   kNN graph W, self included): the statistic ``r`` is the correlation of the smoothed maps,
   the correlation factor of Lee's L (Lee 2001), which is reported too (``lee_L``);
3. ``r`` is tested with the rotation null (``n_null`` draws: the unsmoothed metabolite maps
   rotated over the tissue, then smoothed with the same W) through its effective number of
   spots, and BH-FDR corrected.

The plain Pearson test (spots as independent, raw maps) is reported alongside
(``pearson_r``, ``pearson_pval``, ``pearson_qval``) to show how much it over-calls;
``method="pearson"`` makes it the primary test (the old baseline).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..constants import Key
from ..graph import knn_graph, row_normalise
from ..metrics import bh_fdr
from .spatial_null import (RotationDraws, effective_t_test, null_second_moment,
                           null_second_moment_pairs, pearson_matrix, rotation_draws)

METHODS = ("spatial", "pearson")


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)


def centre_within(X: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Subtract each domain's mean from its spots (the overall mean when ``labels`` is None)."""
    X = np.asarray(X, dtype=np.float64)
    if labels is None:
        return X - X.mean(0)
    codes, _ = pd.factorize(np.asarray(labels))
    ind = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)))
    means = (ind.T @ X) / np.asarray(ind.sum(0)).T
    return X - ind @ means


def candidate_names(annotation: str) -> list[str]:
    """'Glucose [M+H]+;Fructose [M+H]+' → ['Glucose', 'Fructose'] (every candidate kept)."""
    out = []
    for part in str(annotation or "").split(";"):
        part = part.strip()
        if part and part.lower() != "nan":
            out.append(part.rsplit(" [", 1)[0])
    return list(dict.fromkeys(out))


def _annotations(msi: ad.AnnData) -> np.ndarray:
    if Key.var.annotation not in msi.var:
        return np.array([""] * msi.n_vars, dtype=object)
    return msi.var[Key.var.annotation].fillna("").astype(str).to_numpy()


def select_genes(rna: ad.AnnData, n_genes: int) -> np.ndarray:
    """Indices of the ``n_genes`` most variable genes (variance of X), in decreasing order."""
    X = rna.X
    if sp.issparse(X):
        m = np.asarray(X.mean(0)).ravel()
        var = np.asarray(X.multiply(X).mean(0)).ravel() - m**2
    else:
        var = np.asarray(X, dtype=np.float64).var(0)
    return np.argsort(-var, kind="stable")[: min(n_genes, rna.n_vars)]


def associate(rna: ad.AnnData, msi: ad.AnnData, *, labels: np.ndarray | None = None,
              n_genes: int = 500, method: str = "spatial", n_null: int = 200,
              smooth_k: int = 6, adjust_domains: bool = True, seed: int = 0,
              draws: RotationDraws | None = None) -> pd.DataFrame:
    """Every metabolite (``msi``) against the ``n_genes`` most variable genes (``rna``), on
    the same spots (``obsm['spatial']`` in µm).

    One row per pair: ``metabolite_feature, mz, annotation`` (every candidate metabolite,
    ``;``-separated, from ``var['annotation']``), ``n_candidates, gene, r, lee_L, n_eff,
    pval, qval`` (the primary test) and ``pearson_r, pearson_pval, pearson_qval`` (plain
    Pearson on the raw maps), ``method``; sorted by p-value.
    """
    if method not in METHODS:
        raise ValueError(f"unknown association method {method!r} (one of {METHODS})")
    g_idx = select_genes(rna, n_genes)
    G = _dense(rna.X[:, g_idx])
    M = _dense(msi.X)
    n = G.shape[0]

    # plain Pearson: spots as independent observations
    r0 = pearson_matrix(M, G)
    t0 = r0 * np.sqrt((n - 2) / np.clip(1 - r0**2, 1e-12, None))
    p0 = 2 * stats.t.sf(np.abs(t0), n - 2)

    cols: dict[str, np.ndarray] = {}
    if method == "spatial":
        xy = np.asarray(rna.obsm[Key.obsm.spatial], dtype=np.float64)[:, :2]
        lab = labels if adjust_domains else None
        Mc, Gc = centre_within(M, lab), centre_within(G, lab)
        W = row_normalise(knn_graph(xy, smooth_k, include_self=True)) if smooth_k > 0 else None
        Ms, Gs = (W @ Mc, W @ Gc) if W is not None else (Mc, Gc)
        r = pearson_matrix(Ms, Gs)
        # Lee's L with a row-standardised W: mean over spots of the product of the smoothed
        # standardised maps
        zM = Mc / np.where(Mc.std(0) > 0, Mc.std(0), 1.0)
        zG = Gc / np.where(Gc.std(0) > 0, Gc.std(0), 1.0)
        lee = ((W @ zM).T @ (W @ zG) / n) if W is not None else zM.T @ zG / n
        draws = draws if draws is not None else rotation_draws(xy, n_null, seed=seed)
        # the null rotates the unsmoothed metabolite map, then smooths it on the fixed lattice
        m2, _ = null_second_moment(_std(Mc), _std(Gs), draws, smoother=W)
        p, n_eff = effective_t_test(r, m2, n)
        cols = {"r": r, "lee_L": lee, "n_eff": n_eff, "pval": p}
    else:
        cols = {"r": r0, "pval": p0}

    Mn, Gn = M.shape[1], len(g_idx)
    mi = np.repeat(np.arange(Mn), Gn)
    gi = np.tile(np.arange(Gn), Mn)
    ann = _annotations(msi)
    df = pd.DataFrame({
        "metabolite_feature": np.asarray(msi.var_names)[mi],
        "mz": msi.var[Key.var.mz].to_numpy()[mi] if Key.var.mz in msi.var else np.nan,
        "annotation": ann[mi],
        "n_candidates": np.array([len(candidate_names(a)) for a in ann])[mi],
        "gene": np.asarray(rna.var_names)[g_idx][gi],
    })
    for k, v in cols.items():
        df[k] = np.asarray(v).ravel()
    df["qval"] = bh_fdr(np.nan_to_num(df["pval"].to_numpy(), nan=1.0))
    df["pearson_r"] = r0.ravel()
    df["pearson_pval"] = p0.ravel()
    df["pearson_qval"] = bh_fdr(np.nan_to_num(p0.ravel(), nan=1.0))
    df["method"] = method
    return df.sort_values(["pval", "metabolite_feature", "gene"],
                          kind="stable").reset_index(drop=True)


def _std(X):
    X = X - X.mean(0)
    sd = X.std(0)
    return X / np.where(sd > 0, sd, 1.0)


def within_domain_associations(rna: ad.AnnData, msi: ad.AnnData, pairs: pd.DataFrame,
                               labels: np.ndarray, draws: RotationDraws,
                               min_spots: int = 10) -> pd.DataFrame:
    """The correlation of each pair in ``pairs`` (columns ``metabolite_feature``, ``gene``)
    inside each domain, tested with the rotation null restricted to that domain's spots.

    Returns ``metabolite_feature, annotation, gene, domain, n_spots, r, n_eff, pval, qval``
    (BH over all rows); domains with fewer than ``min_spots`` spots are skipped.
    """
    cols = ["metabolite_feature", "annotation", "gene", "domain", "n_spots", "r", "n_eff",
            "pval", "qval"]
    if not len(pairs):
        return pd.DataFrame(columns=cols)
    mpos = pd.Index(msi.var_names).get_indexer(pairs["metabolite_feature"])
    gpos = pd.Index(rna.var_names).get_indexer(pairs["gene"])
    labels = np.asarray(labels)
    # centred within domains: a rotated map then carries no domain steps into another domain
    A = centre_within(_dense(msi.X[:, mpos]), labels)
    B = centre_within(_dense(rna.X[:, gpos]), labels)
    ann = _annotations(msi)[mpos]
    out = []
    for d in pd.unique(labels):
        inside = labels == d
        nd = int(inside.sum())
        if nd < min_spots:
            continue
        a, b = A[inside], B[inside]
        a, b = a - a.mean(0), b - b.mean(0)
        den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, (a * b).sum(0) / den, 0.0)
        m2, _ = null_second_moment_pairs(A, B, draws, mask=inside.astype(np.float64))
        p, n_eff = effective_t_test(r, m2, nd)
        out.append(pd.DataFrame({
            "metabolite_feature": pairs["metabolite_feature"].to_numpy(), "annotation": ann,
            "gene": pairs["gene"].to_numpy(), "domain": d, "n_spots": nd, "r": r,
            "n_eff": n_eff, "pval": p}))
    if not out:
        return pd.DataFrame(columns=cols)
    df = pd.concat(out, ignore_index=True)
    df["qval"] = bh_fdr(df["pval"].to_numpy())
    return df[cols].sort_values(["pval", "domain"], kind="stable").reset_index(drop=True)
