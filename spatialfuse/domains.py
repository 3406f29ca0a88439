"""Stage 5: spatial domains from an embedding (k-means or Leiden), optional spatial refinement."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .graph import knn_graph
from .metrics import clustering_scores, label_continuity

log = logging.getLogger(__name__)


def _leiden(Z: np.ndarray, resolution: float, seed: int, k: int = 15) -> np.ndarray:
    import igraph as ig

    A = sp.triu(knn_graph(Z, k=k), 1).tocoo()
    g = ig.Graph(n=Z.shape[0], edges=list(zip(A.row.tolist(), A.col.tolist())))
    import random

    random.seed(seed)
    ig.set_random_number_generator(random)
    part = g.community_leiden(objective_function="modularity", resolution=resolution,
                              n_iterations=-1)
    return np.asarray(part.membership)


def leiden_n(Z: np.ndarray, n_domains: int | None, resolution: float, seed: int) -> np.ndarray:
    """Leiden at ``resolution``; with ``n_domains`` set, bisect the resolution to hit it."""
    if not n_domains:
        return _leiden(Z, resolution, seed)
    lo, hi = 0.01, 5.0
    best = None
    for _ in range(30):
        mid = np.sqrt(lo * hi)
        lab = _leiden(Z, mid, seed)
        n = len(np.unique(lab))
        if best is None or abs(n - n_domains) < abs(len(np.unique(best)) - n_domains):
            best = lab
        if n == n_domains:
            return lab
        lo, hi = (mid, hi) if n < n_domains else (lo, mid)
    return best


def refine_labels(labels: np.ndarray, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """One pass of spatial majority vote: a spot takes its neighbourhood's majority label when
    more than half of its k neighbours disagree with it (removes salt-and-pepper noise)."""
    A = knn_graph(xy, k=k).tocsr()
    out = labels.copy()
    for i in range(len(labels)):
        nb = labels[A.indices[A.indptr[i]:A.indptr[i + 1]]]
        if nb.size == 0:
            continue
        vals, cnt = np.unique(nb, return_counts=True)
        if (nb != labels[i]).mean() > 0.5:
            out[i] = vals[np.argmax(cnt)]
    return out


def find_domains(Z: np.ndarray, xy: np.ndarray, *, method: str = "kmeans", n_domains: int = 5,
                 resolution: float = 1.0, refine: bool = True, seed: int = 0) -> np.ndarray:
    """Cluster the embedding into spatial domains (labels 0..K-1, largest first)."""
    Z = np.asarray(Z, dtype=np.float64)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        lab = KMeans(n_clusters=int(n_domains), n_init=10, random_state=seed).fit_predict(Z)
    elif method == "leiden":
        lab = leiden_n(Z, n_domains, resolution, seed)
    else:
        raise ValueError(f"unknown domain method {method!r}")
    if refine:
        lab = refine_labels(lab, xy)
    # relabel by size for stable colours across runs/models
    vals, cnt = np.unique(lab, return_counts=True)
    order = vals[np.argsort(-cnt, kind="stable")]
    remap = {v: i for i, v in enumerate(order)}
    return np.array([remap[v] for v in lab])


def domain_metrics(labels: np.ndarray, xy: np.ndarray, truth: np.ndarray | None = None) -> dict:
    m = {"n_domains": int(len(np.unique(labels)))}
    m.update(label_continuity(xy, labels))
    if truth is not None:
        m.update(clustering_scores(truth, labels))
    return m
