"""Spatial-graph smoothing (denoising) of a feature matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..graph import knn_graph, row_normalise


def knn_smooth(X, xy: np.ndarray, k: int = 6, alpha: float = 0.5) -> np.ndarray:
    """``(1 − alpha)·X + alpha·mean of the k spatial neighbours`` (dense output)."""
    P = row_normalise(knn_graph(xy, k=k))
    Xd = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    return (1 - alpha) * Xd + alpha * (P @ Xd)


def loo_neighbour_prediction(X, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Each spot predicted from its neighbours only (never itself): the held-out score of
    smoothing — how well the spatial context predicts a spot it has not seen."""
    P = row_normalise(knn_graph(xy, k=k))
    Xd = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    return P @ Xd
