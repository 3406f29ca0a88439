"""Sparse spatial neighbour graphs (never n×n dense)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree


def knn_graph(xy: np.ndarray, k: int = 6, include_self: bool = False) -> sp.csr_matrix:
    """Symmetric binary k-nearest-neighbour graph of points (µm), CSR, no self loops by default."""
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    k = int(min(k, max(n - 1, 1)))
    _, idx = cKDTree(xy).query(xy, k=k + 1)
    rows = np.repeat(np.arange(n), k)
    cols = idx[:, 1:].ravel()
    A = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    if include_self:
        A = A + sp.identity(n, format="csr")
    return sp.csr_matrix(A)


def radius_graph(xy: np.ndarray, radius_um: float) -> sp.csr_matrix:
    """Binary graph of all pairs closer than ``radius_um`` (sparse), no self loops."""
    tree = cKDTree(np.asarray(xy, dtype=np.float64))
    pairs = tree.query_pairs(radius_um, output_type="ndarray")
    n = len(xy)
    A = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return sp.csr_matrix(A + A.T)


def row_normalise(A: sp.spmatrix) -> sp.csr_matrix:
    d = np.asarray(A.sum(1)).ravel()
    return sp.csr_matrix(sp.diags(np.where(d > 0, 1.0 / np.maximum(d, 1e-12), 0.0)) @ A)
