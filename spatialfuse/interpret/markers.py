"""Domain markers per modality: Wilcoxon rank-sum (one domain vs the rest), log fold change, BH FDR."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..metrics import bh_fdr


def domain_markers(a: ad.AnnData, labels: np.ndarray, modality: str,
                   features: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (domain, feature): mean in/out (log scale), log2 fold change, AUROC-style
    effect size, Wilcoxon p, BH q (within domain). ``features``: boolean mask to test."""
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    names = np.asarray(a.var_names)
    if features is not None:
        X, names = X[:, features], names[features]
    labels = np.asarray(labels)
    out = []
    for d in np.unique(labels):
        inn, rest = X[labels == d], X[labels != d]
        if len(inn) < 3 or len(rest) < 3:
            continue
        u, p = stats.mannwhitneyu(inn, rest, axis=0, alternative="two-sided")
        auc = u / (len(inn) * len(rest))
        mi, mo = inn.mean(0), rest.mean(0)
        lfc = (mi - mo) / np.log(2)  # X is log1p scale: difference of means ≈ log ratio
        out.append(pd.DataFrame({
            "modality": modality, "domain": d, "feature": names, "mean_in": mi, "mean_out": mo,
            "log2fc": lfc, "auroc": auc, "pval": p, "qval": bh_fdr(np.nan_to_num(p, nan=1.0)),
        }))
    if not out:
        return pd.DataFrame(columns=["modality", "domain", "feature", "mean_in", "mean_out",
                                     "log2fc", "auroc", "pval", "qval"])
    df = pd.concat(out, ignore_index=True)
    return df.sort_values(["domain", "qval", "log2fc"], ascending=[True, True, False])
