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


#: Ranges of :func:`krige_cv`'s Gaussian covariance, in spot pitches (100–3,500 µm on Visium).
KRIGE_RANGES = (1.0, 1.7, 2.8, 4.5, 7.5, 12.5, 21.0, 35.0)
#: Its nugget-to-sill ratios (measurement noise relative to the smooth field's variance).
KRIGE_NUGGETS = tuple(np.logspace(-3, 2, 11))
#: Most training spots one fold's kriging is fitted on (beyond it :func:`krige_subset`): the
#: fit is one eigendecomposition of a spots × spots covariance per range, ~0.4 s at 1,500.
KRIGE_MAX_TRAIN = 1500


def _gauss(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * length * length))


def krige(xy_from: np.ndarray, Ys: list[np.ndarray], xy_to: np.ndarray, pitch_um: float,
          ranges=KRIGE_RANGES, nuggets=KRIGE_NUGGETS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Simple kriging of every column of each matrix in ``Ys`` (values at ``xy_from``, µm) at
    ``xy_to``, with its own covariance per column: a Gaussian covariance of range ``pitch_um``
    × one of ``ranges`` plus a nugget (``nuggets``: noise / smooth-field variance), around the
    column's mean, both chosen by type-II maximum likelihood on the column's values at
    ``xy_from`` alone (the field's variance profiled out). Returns, per matrix, the predictions
    (rows of ``xy_to`` × columns) and each column's range (µm).

    Why per column: a domain marker varies over millimetres, a noisy ion over a few spots; one
    fixed neighbourhood (:func:`extrapolate_idw`) suits neither at the inside of a held-out
    block. Each range's covariance is decomposed once for every matrix, column and nugget."""
    xy_from, xy_to = np.asarray(xy_from, float), np.asarray(xy_to, float)
    n = len(xy_from)
    nug = np.asarray(nuggets, float)
    lengths = float(pitch_um) * np.asarray(ranges, float)
    eig = []
    for length in lengths:
        s, U = np.linalg.eigh(_gauss(xy_from, xy_from, length))
        eig.append((np.maximum(s, 0.0), U))
    out = []
    for Y in Ys:
        Y = np.asarray(Y, float)
        mu = Y.mean(0)
        Yc = Y - mu
        best = np.full(Y.shape[1], -np.inf)
        arg = np.zeros((Y.shape[1], 2), int)
        for a, (s, U) in enumerate(eig):
            C2 = (U.T @ Yc) ** 2
            for b, t in enumerate(nug):
                d = s + t
                sill = np.maximum((C2 / d[:, None]).mean(0), 1e-300)
                ll = -0.5 * n * np.log(sill) - 0.5 * np.log(d).sum()
                up = ll > best
                best[up] = ll[up]
                arg[up] = (a, b)
        pred = np.tile(mu, (len(xy_to), 1))
        for a in np.unique(arg[:, 0]):
            s, U = eig[a]
            KU = _gauss(xy_to, xy_from, lengths[a]) @ U
            for b in np.unique(arg[arg[:, 0] == a, 1]):
                cols = np.flatnonzero((arg[:, 0] == a) & (arg[:, 1] == b))
                pred[:, cols] += KU @ ((U.T @ Yc[:, cols]) / (s + nug[b])[:, None])
        out.append((pred, lengths[arg[:, 0]]))
    return out


def krige_subset(xy_from: np.ndarray, xy_to: np.ndarray, max_train: int = KRIGE_MAX_TRAIN,
                 seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the at most ``max_train`` points of ``xy_from`` that kriging at
    ``xy_to`` is fitted on: all of them up to ``max_train``; beyond, the half nearest to
    ``xy_to`` (distance to the nearest of its points; ties by index) and a random half of the
    rest, drawn with ``seed``.

    Why both halves: the values next to a held-out block (or an unmeasured region) are what
    kriging carries into it, and a uniform draw thins them like the rest (at 16 µm bins,
    1,500 of ~14,000 training spots leave one spot in ~10 at the block's edge); the far half
    still spans the section, for the covariance's long ranges and the mean. On synthetic
    16 µm-bin sections (``benchmarks/kriging_subset_benchmark.py``) the ions' within-block r
    was 0.351 at 5,041 bins (kriging on every training spot 0.356, a uniform draw 0.331) and
    0.349 at 19,881 (uniform 0.317)."""
    xy_from, xy_to = np.asarray(xy_from, float), np.asarray(xy_to, float)
    n, max_train = len(xy_from), int(max_train)
    if n <= max_train:
        return np.arange(n)
    near = max_train // 2
    d = cKDTree(xy_to).query(xy_from)[0]
    order = np.argsort(d, kind="stable")
    far = np.random.default_rng([seed, 29]).choice(order[near:], max_train - near, replace=False)
    return np.sort(np.r_[order[:near], far])


def krige_extrapolate(xy_from: np.ndarray, Ys: list[np.ndarray], xy_to: np.ndarray,
                      pitch_um: float, seed: int = 0,
                      max_train: int = KRIGE_MAX_TRAIN) -> list[np.ndarray]:
    """Each matrix of ``Ys`` (values at ``xy_from``) kriged at ``xy_to`` (:func:`krige`,
    covariance fitted per feature); beyond ``max_train`` source points on the subset of
    :func:`krige_subset` (``seed``). Returns one ``xy_to`` × features array per matrix."""
    xy_from = np.asarray(xy_from, float)
    idx = krige_subset(xy_from, xy_to, max_train, seed)
    return [pred for pred, _ in krige(xy_from[idx], [np.asarray(Y, float)[idx] for Y in Ys],
                                      xy_to, pitch_um)]


def krige_cv(Ys: list[np.ndarray], xy: np.ndarray, folds: np.ndarray,
             train_masks: dict[int, np.ndarray], pitch_um: float, seed: int = 0,
             max_train: int = KRIGE_MAX_TRAIN) -> list[np.ndarray]:
    """The blocked CV's second location-only reference: each held-out block's target values
    (each matrix of ``Ys``, spots × features) kriged from its fold's training spots
    (:func:`krige_extrapolate`; the buffer left out). Like :func:`location_cv` it reads no
    other modality. Returns one spots × features array per matrix (float32; NaN outside the
    held-out blocks)."""
    Ys = [np.asarray(Y, float) for Y in Ys]
    xy, folds = np.asarray(xy, float), np.asarray(folds)
    out = [np.full(Y.shape, np.nan, np.float32) for Y in Ys]
    for f, train in sorted(train_masks.items()):
        test = folds == f
        idx = np.flatnonzero(np.asarray(train, bool))
        if not test.any() or idx.size < 3:
            continue
        preds = krige_extrapolate(xy[idx], [Y[idx] for Y in Ys], xy[test], pitch_um,
                                  seed=seed + int(f), max_train=max_train)
        for o, pred in zip(out, preds):
            o[test] = pred
    return out
