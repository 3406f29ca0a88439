"""Spatially blocked cross-validation folds (contiguous tissue blocks, not random spots)."""

from __future__ import annotations

import numpy as np


def spatial_blocks(xy: np.ndarray, n_blocks: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per spot: k-means on the coordinates gives ``n_blocks`` contiguous blocks."""
    from sklearn.cluster import KMeans

    n_blocks = int(min(n_blocks, len(xy)))
    km = KMeans(n_clusters=n_blocks, n_init=4, random_state=seed)
    return km.fit_predict(np.asarray(xy, float))
