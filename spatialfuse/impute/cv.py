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
