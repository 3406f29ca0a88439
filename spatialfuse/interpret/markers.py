"""Domain markers per modality: Wilcoxon rank-sum (one domain vs the rest), effect sizes, BH FDR.

Every feature is ranked once over all spots; each domain's rank sum then gives its
Mann–Whitney U against the rest (normal approximation with tie and continuity corrections, as
``scipy.stats.mannwhitneyu(method="asymptotic")`` and scanpy's ``wilcoxon``). Features are
processed in column chunks, so memory stays at a few chunks of n × features.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..metrics import bh_fdr, column_ranks

COLUMNS = ["modality", "domain", "feature", "mean_in", "mean_out", "pct_in", "pct_out",
           "log2fc", "auroc", "pval", "qval"]


def _tie_term(R: np.ndarray) -> np.ndarray:
    """Σ (t³ − t) over groups of tied values, per column of a rank matrix."""
    S = np.sort(R, axis=0)
    n, F = S.shape
    new = np.ones_like(S, dtype=bool)
    new[1:] = S[1:] != S[:-1]
    run = np.cumsum(new, axis=0) - 1 + np.arange(F)[None, :] * n
    t = np.bincount(run.ravel(), minlength=n * F).astype(np.float64)
    return (t**3 - t).reshape(F, n).sum(1)


def ovr_wilcoxon(X: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest Wilcoxon rank-sum of every column of ``X`` (n × F) for every group
    (``codes`` in 0..n_groups−1). Returns U (groups × F, for "in the group") and two-sided p."""
    n = X.shape[0]
    R = column_ranks(X)
    ind = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_groups, n))
    n1 = np.asarray(ind.sum(1), dtype=np.float64)  # (groups, 1)
    n2 = n - n1
    U = ind @ R - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    T = _tie_term(R)[None, :]
    sigma = np.sqrt(n1 * n2 / 12 * ((n + 1) - T / (n * (n - 1))))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sigma > 0, (np.abs(U - mu) - 0.5).clip(0) / sigma, 0.0)
    return U, 2 * stats.norm.sf(z)


def domain_markers(a: ad.AnnData, labels: np.ndarray, modality: str,
                   features: np.ndarray | None = None, chunk: int = 512) -> pd.DataFrame:
    """One row per (domain, feature): mean of X in/out of the domain, fraction of spots with a
    non-zero value in/out (``pct_in``/``pct_out``, for dot plots), ``log2fc`` (log2 ratio of
    the mean of expm1(X) in vs out, X being log1p scale — scanpy's definition), ``auroc``
    (U / (n_in × n_out): 0.5 = no shift), Wilcoxon p and BH q (within each domain).
    ``features``: boolean mask of the columns to test. Domains with fewer than 3 spots, or
    with fewer than 3 outside them, are skipped."""
    names = np.asarray(a.var_names)
    cols = np.arange(a.n_vars) if features is None else np.nonzero(np.asarray(features))[0]
    labels = np.asarray(labels)
    doms, codes = np.unique(labels, return_inverse=True)
    n = len(labels)
    sizes = np.bincount(codes, minlength=len(doms)).astype(np.float64)
    ok = (sizes >= 3) & (n - sizes >= 3)
    if not ok.any() or not len(cols):
        return pd.DataFrame(columns=COLUMNS)
    ind = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(len(doms), n))
    chunk = int(max(8, min(chunk, 20_000_000 // max(n, 1))))  # ~160 MB per n × chunk array
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("mean_in", "mean_out", "pct_in", "pct_out", "lin_in",
                                           "lin_out", "U", "p")}
    for s in range(0, len(cols), chunk):
        c = cols[s:s + chunk]
        Xc = a.X[:, c]
        X = Xc.toarray() if sp.issparse(Xc) else np.asarray(Xc, dtype=np.float64)
        tot, nz, lin = X.sum(0), (X > 0).sum(0), np.expm1(X).sum(0)
        sin, nzin, linin = ind @ X, ind @ (X > 0).astype(np.float64), ind @ np.expm1(X)
        out_n = np.maximum(n - sizes, 1)[:, None]
        parts["mean_in"].append(sin / sizes[:, None])
        parts["mean_out"].append((tot - sin) / out_n)
        parts["pct_in"].append(nzin / sizes[:, None])
        parts["pct_out"].append((nz - nzin) / out_n)
        parts["lin_in"].append(linin / sizes[:, None])
        parts["lin_out"].append((lin - linin) / out_n)
        U, p = ovr_wilcoxon(X, codes, len(doms))
        parts["U"].append(U)
        parts["p"].append(p)
    v = {k: np.concatenate(x, axis=1) for k, x in parts.items()}
    eps = 1e-9
    lfc = np.log2(v["lin_in"] + eps) - np.log2(v["lin_out"] + eps)
    auc = v["U"] / (sizes * (n - sizes))[:, None]
    out = []
    for i, d in enumerate(doms):
        if not ok[i]:
            continue
        out.append(pd.DataFrame({
            "modality": modality, "domain": d, "feature": names[cols],
            "mean_in": v["mean_in"][i], "mean_out": v["mean_out"][i],
            "pct_in": v["pct_in"][i], "pct_out": v["pct_out"][i], "log2fc": lfc[i],
            "auroc": auc[i], "pval": v["p"][i], "qval": bh_fdr(np.nan_to_num(v["p"][i], nan=1.0)),
        }))
    df = pd.concat(out, ignore_index=True)
    return df.sort_values(["domain", "qval", "log2fc"], ascending=[True, True, False],
                          kind="stable").reset_index(drop=True)


def top_markers(markers: pd.DataFrame, n: int, fdr: float = 1.0) -> pd.DataFrame:
    """Per (modality, domain): the ``n`` up-regulated features (log2fc > 0, q ≤ fdr) with the
    smallest q, ties broken by larger log2fc."""
    up = markers[(markers["log2fc"] > 0) & (markers["qval"] <= fdr)]
    up = up.sort_values(["qval", "log2fc"], ascending=[True, False], kind="stable")
    return up.groupby(["modality", "domain"], sort=True).head(n)
