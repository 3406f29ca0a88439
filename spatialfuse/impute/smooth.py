"""Spatial-graph smoothing (denoising) of a feature matrix.

Two smoothers on the symmetric k-nearest-neighbour graph of the spots:

* :func:`knn_smooth` — one step, ``(1 − alpha)·x + alpha·(mean of the neighbours)``, fixed
  strength (the baselines smooth their source features with it);
* :func:`graph_smooth` — graph-Laplacian (Tikhonov) smoothing, ``(I + λL) y = x``, with the
  strength λ chosen *per feature from held-out spots* by :func:`choose_strength`: random spots
  are hidden, their values are predicted by the smoother fitted on the other spots
  (``(W + λL) y = W x`` with weight 0 on the hidden spots), and each feature gets the λ that
  predicted its hidden spots best. Noisy, spatially smooth features get strong smoothing;
  sharp, well-measured ones are left nearly as they are.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..graph import knn_graph, row_normalise

#: Candidate strengths λ of :func:`graph_smooth` (relative to neighbour weights of 1).
DEFAULT_STRENGTHS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)


def knn_smooth(X, xy: np.ndarray, k: int = 6, alpha: float = 0.5) -> np.ndarray:
    """``(1 − alpha)·X + alpha·mean of the k spatial neighbours`` (dense output)."""
    P = row_normalise(knn_graph(xy, k=k))
    Xd = _dense(X)
    return (1 - alpha) * Xd + alpha * (P @ Xd)


def loo_neighbour_prediction(X, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Each spot predicted from its neighbours only (never itself): the held-out score of
    smoothing — how well the spatial context predicts a spot it has not seen."""
    P = row_normalise(knn_graph(xy, k=k))
    return P @ _dense(X)


def heldout_neighbour_prediction(X, xy: np.ndarray, folds: np.ndarray, k: int = 6) -> np.ndarray:
    """Each fold's spots predicted by the mean of their *visible* neighbours (those outside
    the fold; the mean of all visible spots when none is): the held-out score of neighbour
    smoothing on the same hidden spots as :func:`choose_strength`."""
    A = knn_graph(xy, k=k)
    Xd = _dense(X)
    out = np.empty_like(Xd)
    folds = np.asarray(folds)
    for f in np.unique(folds):
        hide = folds == f
        Av = sp.csr_matrix(A[hide][:, ~hide])
        deg = np.asarray(Av.sum(1)).ravel()
        pred = row_normalise(Av) @ Xd[~hide]
        pred[deg == 0] = Xd[~hide].mean(0)
        out[hide] = pred
    return out


def laplacian(xy: np.ndarray, k: int = 6) -> sp.csc_matrix:
    """Combinatorial Laplacian ``D − A`` of the symmetric binary k-NN graph (sparse)."""
    A = knn_graph(xy, k=k)
    return sp.csc_matrix(sp.diags(np.asarray(A.sum(1)).ravel()) - A)


#: Right-hand sides solved at a time. SuperLU's triangular solves run fastest on a block that
#: stays in cache: per column, 16 at a time took 1.1 ms at 19,881 spots and 2.7 ms at 40,000,
#: against 2.2 and 5.0 ms 256 at a time (``benchmarks/impute_scale_benchmark.py
#: --smoothing-only``); 16 was within 9 % of the fastest of 1–256 from 10,000 to 90,000 spots.
SOLVE_CHUNK = 16


def _factor(L: sp.csc_matrix, w: np.ndarray, lam: float):
    """Sparse LU of ``diag(w) + λL`` (a tiny ridge keeps all-hidden components of the graph
    solvable). The matrix is symmetric positive definite, so the symmetric minimum-degree
    ordering with diagonal pivots applies: half the fill-in of the default column ordering on
    a 2-D spot graph, and factorisations 2× faster at 20,000 spots."""
    M = sp.csc_matrix(sp.diags(w + 1e-9) + lam * L)
    return splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                options={"SymmetricMode": True})


def _solves(lu, X: np.ndarray, cols: np.ndarray, w: np.ndarray):
    """``lu``'s solutions for ``diag(w) X`` on the columns ``cols`` (indices), ``SOLVE_CHUNK``
    at a time: yields (column indices, spots × chunk solution)."""
    for j0 in range(0, len(cols), SOLVE_CHUNK):
        c = cols[j0:j0 + SOLVE_CHUNK]
        yield c, lu.solve(np.asfortranarray(X[:, c] * w[:, None], np.float64))


def graph_smooth(X, xy: np.ndarray, strength, k: int = 6) -> np.ndarray:
    """``(I + λL)^{-1} x`` for every feature; ``strength``: one λ, or one per feature (0 = the
    feature as measured)."""
    Xd = _dense(X)
    lam = np.broadcast_to(np.asarray(strength, float), (Xd.shape[1],))
    L = laplacian(xy, k)
    out = Xd.copy()
    w = np.ones(len(Xd))
    for v in np.unique(lam):
        if v > 0:
            cols = np.flatnonzero(lam == v)
            for c, Y in _solves(_factor(L, w, float(v)), Xd, cols, w):
                out[:, c] = Y
    return out


def heldout_spot_folds(n: int, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Random fold id per spot (balanced), for scoring smoothers on hidden spots."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % max(2, int(n_folds)))


def choose_strength(X, xy: np.ndarray, folds: np.ndarray, strengths=DEFAULT_STRENGTHS,
                    k: int = 6) -> dict:
    """Pick λ per feature by predicting hidden spots.

    For each fold the fold's spots are hidden (weight 0) and predicted by the smoother fitted on
    the rest, for every λ in ``strengths``. Returns:

    * ``strength``: per feature, the λ with the smallest squared error over all hidden spots
      (what :func:`graph_smooth` should use on the full data);
    * ``heldout``: out-of-fold predictions (spots × features) where each fold's λ was chosen on
      the *other* folds only — an honest held-out score of the whole procedure, selection
      included.
    """
    Xd = _dense(X)
    folds = np.asarray(folds)
    strengths = np.asarray(strengths, float)
    L = laplacian(xy, k)
    ids = np.unique(folds)
    p = Xd.shape[1]
    err = np.zeros((len(ids), len(strengths), p))
    for i, f in enumerate(ids):
        hide = folds == f
        w = (~hide).astype(float)
        for j, lam in enumerate(strengths):
            for c, Y in _solves(_factor(L, w, float(lam)), Xd, np.arange(p), w):
                err[i, j, c] = ((Y[hide] - Xd[np.ix_(hide, c)]) ** 2).sum(0)
    total = err.sum(0)
    best = np.argmin(total, axis=0)
    # second pass (memory linear in spots x features): each fold predicted with the lambda that
    # the other folds chose
    heldout = np.empty_like(Xd)
    for i, f in enumerate(ids):
        hide = folds == f
        w = (~hide).astype(float)
        b = np.argmin(total - err[i], axis=0)
        for j in np.unique(b):
            for c, Y in _solves(_factor(L, w, float(strengths[j])), Xd, np.flatnonzero(b == j), w):
                heldout[np.ix_(hide, c)] = Y[hide]
    return {"strength": strengths[best], "heldout": heldout}


def heldout_entry_folds(n_spots: int, n_features: int, n_folds: int = 5, n_groups: int = 10,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Held-out *entries* rather than whole spots: features fall into ``n_groups`` random
    groups and each group hides its own random balanced spot folds, so a hidden entry's spot
    keeps the other groups' features. Returns the feature's group (``n_features``) and the
    spot folds of every group (``n_groups × n_spots``)."""
    rng = np.random.default_rng([seed, 17])
    g = max(1, min(int(n_groups), n_features))
    groups = rng.permutation(np.arange(n_features) % g)
    folds = np.stack([rng.permutation(np.arange(n_spots) % max(2, int(n_folds)))
                      for _ in range(g)])
    return groups, folds


def heldout_entry_predictions(X, xy: np.ndarray, groups: np.ndarray, folds: np.ndarray,
                              strengths=DEFAULT_STRENGTHS, k: int = 6) -> dict[str, np.ndarray]:
    """Every entry predicted once, by smoothers that did not see it (see
    :func:`heldout_entry_folds`): ``knn_smooth`` (mean of the visible neighbours) and
    ``graph_smooth`` (strength chosen per feature on the group's other folds)."""
    Xd = _dense(X)
    out = {"knn_smooth": np.empty_like(Xd), "graph_smooth": np.empty_like(Xd)}
    for gi, f in enumerate(folds):
        cols = groups == gi
        if not cols.any():
            continue
        out["knn_smooth"][:, cols] = heldout_neighbour_prediction(Xd[:, cols], xy, f, k)
        out["graph_smooth"][:, cols] = choose_strength(Xd[:, cols], xy, f, strengths, k)["heldout"]
    return out
