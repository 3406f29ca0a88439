"""Spatially blocked cross-validation folds (contiguous tissue blocks, not random spots)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def spatial_blocks(xy: np.ndarray, n_blocks: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per spot: k-means on the coordinates gives ``n_blocks`` contiguous blocks."""
    from sklearn.cluster import KMeans

    n_blocks = int(min(n_blocks, len(xy)))
    km = KMeans(n_clusters=n_blocks, n_init=4, random_state=seed)
    return km.fit_predict(np.asarray(xy, float))


def auto_buffer_um(xy: np.ndarray, hops: int = 2, k: int = 6) -> float:
    """A buffer as wide as ``hops`` steps of the k-nearest-neighbour graph: the median distance
    from a spot to its k-th nearest neighbour, times ``hops`` (µm)."""
    xy = np.asarray(xy, float)
    kk = int(min(k, len(xy) - 1))
    if kk < 1:
        return 0.0
    d, _ = cKDTree(xy).query(xy, k=kk + 1)
    return float(hops * np.median(d[:, kk]))


def training_masks(xy: np.ndarray, folds: np.ndarray,
                   buffer_um: float = 0.0) -> dict[int, np.ndarray]:
    """Per fold: the spots a model may train on when that fold is held out — every other fold,
    minus the spots closer than ``buffer_um`` to a held-out spot (so that spatial context,
    smoothing or graph neighbours cannot carry held-out values into training or the target
    values of training spots into the held-out block's predictions)."""
    xy = np.asarray(xy, float)
    folds = np.asarray(folds)
    out = {}
    for f in np.unique(folds):
        test = folds == f
        train = ~test
        if buffer_um > 0 and train.any():
            d, _ = cKDTree(xy[test]).query(xy[train], k=1)
            idx = np.nonzero(train)[0]
            train[idx[d < buffer_um]] = False
        out[int(f)] = train
    return out


def heldout_distances(xy: np.ndarray, folds: np.ndarray,
                      train_masks: dict[int, np.ndarray]) -> np.ndarray:
    """Per held-out spot: the distance (µm) to the nearest spot its fold's model trained on —
    how far from measured data the cross-validation scored its predictions."""
    xy = np.asarray(xy, float)
    out = np.full(len(xy), np.nan)
    for f, train in train_masks.items():
        test = np.asarray(folds) == f
        if test.any() and np.asarray(train, bool).any():
            out[test] = cKDTree(xy[np.asarray(train, bool)]).query(xy[test])[0]
    return out


#: Nearest spots an extrapolated value is averaged from (inverse-square-distance weights).
IDW_NEIGHBOURS = 6


def extrapolate_idw(xy_from: np.ndarray, Y_from: np.ndarray, xy_to: np.ndarray,
                    k: int = IDW_NEIGHBOURS) -> np.ndarray:
    """Each row of ``xy_to`` gets the inverse-square-distance weighted mean of ``Y_from`` at
    its ``k`` nearest points of ``xy_from`` (µm; distances below 1 µm count as 1 µm).
    Memory: one ``xy_to`` × features array besides the result, neighbour by neighbour (at
    4,000 × 2,000: 129 MB peak against 449 MB for all ``k`` neighbours' values at once)."""
    xy_from, xy_to = np.asarray(xy_from, float), np.asarray(xy_to, float)
    Y_from = np.asarray(Y_from, float)
    k = int(min(k, len(xy_from)))
    d, i = cKDTree(xy_from).query(xy_to, k=k)
    d, i = d.reshape(len(xy_to), k), i.reshape(len(xy_to), k)
    w = 1.0 / np.maximum(d, 1.0) ** 2
    out = np.zeros((len(xy_to), Y_from.shape[1]))
    part = np.empty_like(out)  # each neighbour's values in turn, scaled in place
    for j in range(k):
        np.take(Y_from, i[:, j], axis=0, out=part, mode="clip")  # "raise" would buffer a copy
        part *= w[:, j:j + 1]
        out += part
    out /= w.sum(1)[:, None]
    return out


def location_cv(Y: np.ndarray, xy: np.ndarray, folds: np.ndarray,
                train_masks: dict[int, np.ndarray], k: int = IDW_NEIGHBOURS) -> np.ndarray:
    """The blocked CV's location-only reference: each held-out block's target values
    extrapolated from its fold's training spots (the buffer left out, as for every method)
    by position alone (:func:`extrapolate_idw`). It reads no other modality. Blocks and a
    buffer do not stop a field that is smoother than a block from being extrapolated into it,
    so this is the part of a method's held-out r that location alone would give; what a
    method scores beyond it is what the other modality adds. Returns spots × features
    (float32; NaN outside the held-out blocks)."""
    Y, xy, folds = np.asarray(Y, float), np.asarray(xy, float), np.asarray(folds)
    out = np.full(Y.shape, np.nan, np.float32)
    for f, train in train_masks.items():
        test = folds == f
        train = np.asarray(train, bool)
        if test.any() and train.any():
            out[test] = extrapolate_idw(xy[train], Y[train], xy[test], k)
    return out
