"""Metrics shared across stages: clustering agreement, spatial continuity, correlations."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .graph import knn_graph


def clustering_scores(truth, pred) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth, pred = np.asarray(truth), np.asarray(pred)
    return {"ari": float(adjusted_rand_score(truth, pred)),
            "nmi": float(normalized_mutual_info_score(truth, pred))}


def label_continuity(xy: np.ndarray, labels, k: int = 6) -> dict:
    """Spatial continuity of a labelling.

    ``neighbour_agreement``: fraction of k-NN spatial edges joining equal labels (1 = perfectly
    contiguous domains); ``chaos_um``: the CHAOS score (Shang & Zhou 2022): the mean distance
    (µm) from each spot to its nearest spot of the same label (lower is more continuous).
    """
    labels = np.asarray(labels)
    A = sp.triu(knn_graph(xy, k=k), 1).tocoo()
    same = labels[A.row] == labels[A.col]
    agree = float(same.mean()) if same.size else float("nan")
    # CHAOS: within each label, 1-NN graph distances; averaged over spots
    from scipy.spatial import cKDTree

    tot, n = 0.0, 0
    for lab in np.unique(labels):
        pts = xy[labels == lab]
        if len(pts) < 2:
            continue
        d, _ = cKDTree(pts).query(pts, k=2)
        tot += d[:, 1].sum()
        n += len(pts)
    return {"neighbour_agreement": agree, "chaos_um": float(tot / n) if n else float("nan")}


#: Values :func:`column_ranks` ranks at a time: its temporary arrays stay a few times this long.
RANK_BLOCK = 1 << 20


def column_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks (1 … n) within each column of an (n × p) array, ties given their average rank, a
    column holding a NaN all NaN: ``scipy.stats.rankdata(a, axis=0)``, to the bit, in less
    time and memory. Columns go a block at a time (:data:`RANK_BLOCK` values), each sorted as
    contiguous rows, the runs of ties found on the flattened sorted values."""
    a = np.asarray(a, float)
    n, p = a.shape
    out = np.empty((n, p))
    if n == 0:
        return out
    step = max(1, RANK_BLOCK // n)
    for j0 in range(0, p, step):
        A = np.ascontiguousarray(a[:, j0:j0 + step].T)
        q = len(A)
        # flat positions of each row's sorted values (the order inside a run of ties does not
        # matter: the run shares its average rank)
        flat = np.argsort(A, axis=1)
        flat += (np.arange(q) * n)[:, None]
        flat = flat.ravel()
        s = A.ravel()[flat]
        starts = np.ones(q * n, bool)
        np.not_equal(s[1:], s[:-1], out=starts[1:])
        starts[::n] = True  # every row starts a run
        first = np.flatnonzero(starts)
        last = np.append(first[1:], q * n) - 1
        average = (first + last) / 2.0 - (first // n) * n + 1.0
        ranks = np.empty(q * n)
        ranks[flat] = average[np.cumsum(starts) - 1]
        ranks = ranks.reshape(q, n)
        ranks[np.isnan(A).any(1)] = np.nan
        out[:, j0:j0 + step] = ranks.T
    return out


def columnwise_corr(a: np.ndarray, b: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of matching columns of two (n × p) arrays; NaN where a column is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if method == "spearman":
        a, b = column_ranks(a), column_ranks(b)
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    p = np.asarray(p, float)
    n = p.size
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(q, 0, 1)
    return out
