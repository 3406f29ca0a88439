"""Cross-modal prediction (genes → metabolites, metabolites → genes) with spatially blocked CV.

Every method is fitted on the training spots of a fold only and predicts the held-out block
without seeing the block's target modality; the out-of-fold predictions of all folds make one
full map per method and direction (every spot predicted exactly once, by the fold holding it
out).

Baselines read the *source* modality spatially smoothed (``knn_smooth``: the source is measured
everywhere, so smoothing it leaks nothing) and reduce it to principal components fitted on the
training spots:

* ``ridge``: ridge regression from the components to every target feature (penalty chosen by
  efficient leave-one-out on the training spots when ``ridge_alpha`` is None);
* ``knn``: distance-weighted mean of the targets of the ``knn_k`` training spots nearest in
  component space;
* ``sparse`` (opt-in, ``sparse=True``): one lasso per target feature on the components *and
  every individual smoothed source feature* (:func:`sparse_fold`), its penalty chosen per
  target on spatial blocks of the training spots (:func:`inner_splits`), and kept only for the
  targets where it beats ``ridge`` on those blocks by ``sparse_margin`` standard errors (the
  others get ``ridge``'s prediction). The components carry what many features share (tissue
  domains); a single source feature that carries a target's own signal (a gene and a
  metabolite tied by one pathway) is invisible in the first 30 components of a few hundred
  features, but the lasso can pick it.

With ``sparse``, every model also gets a ``<model>_sparse`` hybrid: the same lasso with the
model's source-only latent among its inputs, against the ``<model>_ridge`` hybrid, so a
``<model>_sparse`` win over ``sparse`` is the latent's.

Model-based methods fit a joint model of :mod:`spatialfuse.models` with ``train_mask`` = the
fold's training spots and predict with :meth:`FittedModel.predict_msi_from_rna` /
``predict_rna_from_msi``: the VAE infers the latent from the source modality alone, the GNN and
the Transformer decode from a latent that saw the source modality and (outside the buffer) no
target values of the held-out block. With ``transductive``, each direction gets its own fit in
which the source modality of *every* spot (held-out block and buffer included) enters training
— inputs, neighbours' context, its reconstruction term, its input projection — and the target
modality only at the training spots (:func:`spatialfuse.models.api.fit`'s ``transductive``):
the source is measured everywhere and seen at prediction time anyway (the baselines smooth it
over all spots too), so nothing of the held-out targets leaks, and the model learns on the
held-out block's own source distribution.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .cv import spatial_blocks
from .fitpool import FoldFits

log = logging.getLogger(__name__)

DIRECTIONS = (("rna", "msi"), ("msi", "rna"))  # (source, target)
BASELINES = ("ridge", "knn")
#: The sparse baseline added by ``sparse=True`` (a baseline: it reads no model).
SPARSE_BASELINE = "sparse"
#: The location-only references of the blocked CV: the nearest training spots
#: (:func:`.cv.location_cv`) and kriging with a covariance fitted per feature
#: (:func:`.cv.krige_cv`). Scored beside the methods, but neither a baseline nor model-based,
#: never ``best_method``, no layer.
LOCATION = "location"
KRIGING = "location_kriging"
REFERENCES = (LOCATION, KRIGING)
#: How the report names them.
REFERENCE_NAMES = {LOCATION: "nearest spots", KRIGING: "kriging"}
#: What every label of a reference in the report ends with (tables tell them from methods by it).
REFERENCE_TAG = "(reference)"


def reference_label(ref: str) -> str:
    """``location only, kriging (reference)``: how the report's tables and figures label one
    reference (every label ends in :data:`REFERENCE_TAG`)."""
    return f"location only, {REFERENCE_NAMES.get(ref, ref)} {REFERENCE_TAG}"


def stronger_reference(res: dict, key: str = "median_pearson") -> str | None:
    """The location reference with the higher ``key`` in one task's metrics (``res``: method
    or reference → summary); the first of :data:`REFERENCES` on a tie, None without any.
    Each method is set against the stronger one per score: what location alone reaches by
    either route is not the source modality's doing."""
    have = [r for r in REFERENCES if isinstance(res.get(r), dict)]
    if not have:
        return None
    return max(have, key=lambda r: np.nan_to_num(res[r].get(key, np.nan), nan=-np.inf))


def score_column(method: str, source: str) -> str:
    """A cross-modal method's name in ``feature_scores.tsv`` (and, for a method, its layer):
    ``<method>_from_<source>``; a reference (location) under its own name."""
    return method if method in REFERENCES else f"{method}_from_{source}"


RIDGE_ALPHAS = np.logspace(-2, 4, 13)
#: Key of the seconds spent in the shared source components (one SVD per fold and direction).
COMPONENTS = "components"
#: Lasso penalties tried per target, relative to the smallest penalty that zeroes every weight.
LASSO_GRID = np.logspace(0, -2, 9)
#: Spatial blocks of the training spots for the lasso's own penalty choice.
LASSO_INNER_BLOCKS = 4
#: Standard errors by which a target's lasso must beat the base ridge on the inner blocks.
SPARSE_MARGIN = 2.0


def ridge_cv_predict(X: np.ndarray, Y: np.ndarray, X_new: np.ndarray,
                     alphas=RIDGE_ALPHAS) -> np.ndarray:
    """Ridge regression of every column of ``Y`` on ``X`` (unpenalised intercept), one penalty
    for all columns chosen from ``alphas`` by the leave-one-out squared error summed over
    rows and columns; predictions at ``X_new``. The model and the choice of scikit-learn's
    ``RidgeCV(alphas)`` (efficient leave-one-out), to rounding.

    Faster when ``Y`` has many columns: with the centred ``X`` = U S Vᵀ, a row's residuals
    summed over the columns are ‖y_i‖² − 2 (u_i∘d)·a_i + (u_i∘d) B (u_i∘d)ᵀ (d = s²/(s²+α),
    A = Y Yᵀ U, B = UᵀY YᵀU), so each penalty costs rows × rank², not rows × columns (2,000
    genes: 14 s → 0.44 s for 16,000 rows × 46 inputs on one thread)."""
    X, Y, X_new = (np.asarray(a, np.float64) for a in (X, Y, X_new))
    if Y.ndim == 1:
        return ridge_cv_predict(X, Y[:, None], X_new, alphas)[:, 0]
    n = len(X)
    xm, ym = X.mean(0), Y.mean(0)
    Yc = Y - ym
    U, s, Vt = np.linalg.svd(X - xm, full_matrices=False)
    Q = U.T @ Yc  # (rank, columns)
    A, B = Yc @ Q.T, Q @ Q.T  # (rows, rank), (rank, rank)
    yy = np.einsum("ij,ij->i", Yc, Yc)
    s2 = s ** 2
    best, best_err = None, np.inf
    for alpha in np.asarray(alphas, np.float64):
        d = s2 / (s2 + alpha)
        W = U * d
        rss = yy - 2 * np.einsum("ij,ij->i", W, A) + np.einsum("ij,ij->i", W @ B, W)
        h = 1.0 / n + np.einsum("ij,ij->i", U, W)
        err = float((np.maximum(rss, 0.0) / (1.0 - h) ** 2).sum())
        if err < best_err:  # ties: the first (smallest) penalty, as RidgeCV
            best, best_err = alpha, err
    coef = Vt.T @ ((s / (s2 + best))[:, None] * Q)  # (inputs, columns)
    return (X_new - xm) @ coef + ym


def _pcs(S: np.ndarray, train: np.ndarray, n_comps: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(S[train])
    nc = int(max(1, min(n_comps, train.sum() - 1, S.shape[1])))
    Z = sc.transform(S)
    pca = PCA(n_components=nc, svd_solver="full", random_state=seed).fit(Z[train])
    return pca.transform(Z)


def baseline_fold(method: str, S: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray,
                  *, n_comps: int = 30, ridge_alpha: float | None = None, knn_k: int = 10,
                  seed: int = 0, Z: np.ndarray | None = None) -> np.ndarray:
    """Predict ``Y[test]`` from source features ``S`` with a model fitted on ``train`` rows only
    (standardisation and PCA included). ``Z``: those components when already computed (they
    depend only on ``S``, ``train``, ``n_comps`` and ``seed``)."""
    Z = _pcs(S, train, n_comps, seed) if Z is None else Z
    if method == "ridge":  # a fixed penalty is the one-candidate choice
        alphas = RIDGE_ALPHAS if ridge_alpha is None else (float(ridge_alpha),)
        return ridge_cv_predict(Z[train], Y[train], Z[test], alphas)
    if method == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        k = int(min(knn_k, train.sum()))
        m = KNeighborsRegressor(n_neighbors=k, weights="distance", algorithm="kd_tree")
        return m.fit(Z[train], Y[train]).predict(Z[test])
    raise ValueError(f"unknown baseline {method!r}; available: {BASELINES}")


def inner_splits(xy: np.ndarray, train: np.ndarray, n_blocks: int = LASSO_INNER_BLOCKS,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spatially blocked splits of the ``train`` spots for choices made on them alone: k-means
    blocks of the training spots, each scored in turn by a fit on the others. Boolean masks
    over all spots. (No buffer ring here: one as wide as the outer cross-validation's halves
    the fits of a ~300-spot section and made the choices worse on the demo; see
    benchmarks/RESULTS.md.)"""
    train = np.asarray(train, bool)
    idx = np.flatnonzero(train)
    g = spatial_blocks(np.asarray(xy)[train], n_blocks, seed)
    out = []
    for k in np.unique(g):
        a, b = np.zeros(len(train), bool), np.zeros(len(train), bool)
        a[idx[g != k]], b[idx[g == k]] = True, True
        out.append((a, b))
    return out


def sparse_fold(F: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray,
                splits: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray = LASSO_GRID,
                base: np.ndarray | None = None, margin: float = SPARSE_MARGIN,
                evidence: list | None = None) -> np.ndarray:
    """Predict ``Y[test]`` with one lasso per target column on the inputs ``F`` (standardised
    on the ``train`` rows), each target's penalty chosen from ``grid`` × its own largest useful
    penalty by its summed error over ``splits`` ((fit, score) masks within ``train``, e.g.
    :func:`inner_splits`: spatial blocks; a random split of spatially smooth data would pick
    too weak a penalty). A target no input predicts gets all-zero weights, i.e. its training
    mean. Only ``train`` rows of ``Y`` are read.

    ``base``: inputs of a ridge (one penalty for all targets by leave-one-out, as the ``ridge``
    baseline) that each target keeps unless its lasso beats it on the same blocks by more
    than ``margin`` standard errors of their paired per-spot squared errors. The lasso's
    error there is that of its best penalty on those very blocks, so it is optimistic; the
    margin is what makes a lasso that only found noise fall back to the ridge. ``evidence``
    (a list) receives that paired statistic per target (mean difference / its standard
    error; below ``-margin``: the lasso is kept).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lasso_path

    train, test = np.asarray(train, bool), np.asarray(test, bool)
    mu, sd = F[train].mean(0), F[train].std(0)
    Z = (F - mu) / np.where(sd > 0, sd, 1.0)
    Zt, Yt = Z[train], np.asarray(Y, float)[train]
    n, p = Zt.shape
    amax = np.abs(Zt.T @ (Yt - Yt.mean(0))).max(0) / n  # per target: weights all zero above
    err = np.zeros((Yt.shape[1], len(grid)))  # summed over the blocks' spots
    Bt = None if base is None else np.asarray(base, float)[train]
    d1, d2, m = np.zeros_like(err), np.zeros_like(err), 0  # sums of (lasso - base) error, ², n

    def path(X, Yc, alphas_of, cols=None):
        """Centred ``X``/``Yc``: weights (targets × inputs × alphas) of the targets ``cols``
        (default: all), each target's path on a Gram matrix. With more inputs than rows, each
        target first keeps the ``rows - 1`` inputs of largest covariance with it on these rows
        (screening; nothing outside them is read), so that a path costs O(rows²) instead of
        O(rows · inputs) per sweep."""
        cols = np.arange(Yc.shape[1]) if cols is None else np.asarray(cols, int)
        X = np.asfortranarray(X, dtype=np.float64)
        C = X.T @ Yc[:, cols]
        gram = np.ascontiguousarray(X.T @ X)
        keep = min(p, max(len(X) - 1, 1))
        W = np.zeros((len(cols), p, len(alphas_of(0))))
        for i, j in enumerate(cols):
            if amax[j] <= 0:
                continue
            y, xy = np.ascontiguousarray(Yc[:, j], np.float64), C[:, i]
            if keep == p:  # inputs prepared above: sklearn's per-call checks skipped (half the time)
                W[i] = lasso_path(X, y, alphas=alphas_of(j), max_iter=1000, tol=1e-3,
                                  precompute=gram, Xy=np.ascontiguousarray(xy),
                                  check_input=False)[1]
                continue
            sel = np.sort(np.argpartition(-np.abs(xy), keep - 1)[:keep])
            W[i][sel] = lasso_path(np.asfortranarray(X[:, sel]), y, alphas=alphas_of(j),
                                   max_iter=1000, tol=1e-3,
                                   precompute=np.ascontiguousarray(gram[np.ix_(sel, sel)]),
                                   Xy=np.ascontiguousarray(xy[sel]), check_input=False)[1]
        return W

    with warnings.catch_warnings():  # the weakest penalties of a path may stop at max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fit, score in splits:
            a, b = np.asarray(fit, bool)[train], np.asarray(score, bool)[train]
            if a.sum() < 3 or not b.any():
                continue
            xm, ym = Zt[a].mean(0), Yt[a].mean(0)
            W = path(Zt[a] - xm, Yt[a] - ym, lambda j: amax[j] * grid)
            pred = np.einsum("np,tpa->nta", Zt[b] - xm, W) + ym[None, :, None]
            e = (pred - Yt[b][:, :, None]) ** 2
            err += e.sum(0)
            if Bt is not None:
                e -= ((ridge_cv_predict(Bt[a], Yt[a], Bt[b]) - Yt[b]) ** 2)[:, :, None]
                d1, d2, m = d1 + e.sum(0), d2 + (e ** 2).sum(0), m + len(e)
        k = np.argmin(err, 1)  # ties (targets nothing predicts): the first, strongest
        best = grid[k]
        lasso = np.ones(len(k), bool)
        if Bt is not None:  # the paired difference at each target's chosen penalty, per spot
            t = np.arange(len(k))
            mean = d1[t, k] / max(m, 1)  # < 0 where the lasso is better
            se = np.sqrt(np.maximum(d2[t, k] - m * mean ** 2, 0) / max(m - 1, 1) / max(m, 1))
            z = np.where(se > 0, mean / np.where(se > 0, se, 1.0), 0.0)
            if evidence is not None:
                evidence.append(z)
            lasso = z < -margin
        cols = np.flatnonzero(lasso)  # the final fit only for the targets that keep the lasso
        xm, ym = Zt.mean(0), Yt.mean(0)
        W = path(Zt - xm, Yt - ym, lambda j: [amax[j] * best[j]], cols)[:, :, 0]
    out = np.empty((int(test.sum()), len(k)))
    out[:, cols] = (Z[test] - xm) @ W.T + ym[cols]
    if Bt is not None and len(cols) < len(k):
        ridge = ridge_cv_predict(Bt, Yt, np.asarray(base, float)[test])
        out[:, ~lasso] = ridge[:, ~lasso]
    return out


def model_fold(name: str, rna, msi, train: np.ndarray, test: np.ndarray, params: dict, *,
               n_top_genes: int | None = None, seed: int = 0, device: str = "cpu",
               transductive: bool = False, sources=("rna", "msi")):
    """Fit joint model ``name`` on ``train`` spots (standardisation statistics from them too)
    and predict the other modality of ``test`` spots from each of ``sources``, each without its
    own values.

    ``transductive``: one fit per source, each also trained on the source modality of the
    spots outside ``train`` (see the module docstring); about twice the time.

    Returns ({"msi": msi_hat, "rna": rna_hat, "z_from_rna": ..., "z_from_msi": ...}, the
    targets of ``sources`` only, in log-normalised units; rna feature names; seconds).
    """
    from ..models import prepare_inputs
    from ..models.api import fit, fixed_threads

    t0 = time.perf_counter()
    with fixed_threads():
        inputs = prepare_inputs(rna, msi, n_top_genes, stats_mask=train)
    if transductive:  # genes -> metabolites from a fit that saw every spot's genes, and back
        fits = {s: fit(name, inputs, params, seed=seed, device=device, train_mask=train,
                       transductive=s) for s in sources}
    else:
        fm = fit(name, inputs, params, seed=seed, device=device, train_mask=train)
        fits = {s: fm for s in sources}
    out = {}
    for src in sources:
        if src == "rna":
            out["msi"] = inputs.to_lognormal("msi", fits[src].predict_msi_from_rna(spots=test))
        else:
            out["rna"] = inputs.to_lognormal("rna", fits[src].predict_rna_from_msi(spots=test))
        out[f"z_from_{src}"] = source_embedding(fits[src], src)
    return out, inputs.rna_features, time.perf_counter() - t0


def model_fold_jobs(models, model_params: dict, folds: np.ndarray,
                    train_masks: dict[int, np.ndarray], *, n_top_genes: int | None = None,
                    seed: int = 0, device: str = "cpu", transductive: bool = False,
                    directions=DIRECTIONS, n_seeds: int = 1) -> list[dict]:
    """The :func:`model_fold` keyword arguments (but ``rna``/``msi``) of a CV's fits: model by
    model, fold by fold (``train_masks``' order), and with ``n_seeds`` > 1 each fold's fit once
    per model seed ``seed``, ``seed + 1``, … — the order in which :func:`crossmodal_cv` and
    the denoising CV take their results."""
    return [dict(name=name, train=train, test=folds == f, params=model_params.get(name, {}),
                 n_top_genes=n_top_genes, seed=seed + r, device=device,
                 transductive=transductive, sources=tuple(src for src, _ in directions))
            for name in models for f, train in train_masks.items() for r in range(int(n_seeds))]


def source_embedding(fm, source: str) -> np.ndarray:
    """Latent of every spot inferred from modality ``source`` alone (the other modality hidden
    at every spot, training spots included), so training and held-out spots get the latent
    the same way and no target value enters it."""
    return fm.embed_from(source).astype(np.float64)


def ridge_on_embedding(Z: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray,
                       pcs: np.ndarray | None = None) -> np.ndarray:
    """Ridge from a model's source-only latent ``Z`` (standardised on the ``train`` rows),
    next to the baseline's source components ``pcs`` when given, to the targets, fitted on
    ``train`` rows (penalty by leave-one-out on them)."""
    F = embedding_inputs(Z, train, pcs)
    return ridge_cv_predict(F[train], Y[train], F[test])


def embedding_inputs(Z: np.ndarray, train: np.ndarray, pcs: np.ndarray | None = None):
    """A latent ``Z`` standardised on the ``train`` rows, after the components ``pcs`` if
    given: the inputs of the ``<model>_ridge`` hybrid."""
    from sklearn.preprocessing import StandardScaler

    F = StandardScaler().fit(Z[train]).transform(Z)
    return F if pcs is None else np.c_[pcs, F]


def _empty(Xr: np.ndarray, Xm: np.ndarray) -> dict[str, np.ndarray]:
    """One method's out-of-fold predictions, NaN until its fold fills them. float32, as the
    layers they become (and are scored as): at 10^4 spots × 2,000 genes each array is 80 MB,
    and every method's is held until the CV ends."""
    return {"msi": np.full(Xm.shape, np.nan, np.float32),
            "rna": np.full(Xr.shape, np.nan, np.float32)}


def crossmodal_cv(Xr: np.ndarray, Xm: np.ndarray, Sr: np.ndarray, Sm: np.ndarray,
                  folds: np.ndarray, train_masks: dict[int, np.ndarray], *,
                  baselines=BASELINES, models=(), model_params: dict | None = None,
                  rna_ad=None, msi_ad=None, gene_index: np.ndarray | None = None,
                  n_comps: int = 30, ridge_alpha: float | None = None, knn_k: int = 10,
                  n_top_genes: int | None = None, seed: int = 0, device: str = "cpu",
                  hybrid: str | None = "stack", transductive: bool = False,
                  sparse: bool = False, xy: np.ndarray | None = None,
                  sparse_margin: float | None = SPARSE_MARGIN, directions=DIRECTIONS,
                  fitted=None, model_seeds: int = 1):
    """Out-of-fold predictions of every method in both ``directions`` ((source, target)
    pairs; the target of a direction left out stays NaN and its source is never read).

    ``Xr`` (spots × scored genes) and ``Xm`` (spots × m/z): measured log-normalised targets;
    ``Sr``/``Sm``: the smoothed source features of the baselines; ``rna_ad``/``msi_ad``: the
    paired AnnData the models read (needed when ``models`` is not empty); ``gene_index``: the
    columns of ``rna_ad`` that ``Xr`` holds (the models' genes must be these);
    ``transductive``: per-direction model fits that also train on the source modality of the
    held-out and buffer spots (:func:`model_fold`); ``sparse``: also the ``sparse`` baseline and
    the ``<model>_sparse`` hybrids (:func:`sparse_fold`; needs the spot positions ``xy`` for
    its choices on spatial blocks of the training spots; ``sparse_margin``: its ``margin``
    over the ``ridge`` baseline or the ``<model>_ridge`` hybrid, None = the lasso for every
    target); ``fitted``: the models' fold fits already submitted (a
    :class:`.fitpool.Submitted` of :func:`model_fold_jobs` with these arguments, as
    :func:`.stage.run_impute` does at its start, in worker processes when it has them; the
    same numbers either way); None: they run here, one after the other. ``model_seeds``: each
    fold's model fitted that many times, with model seeds ``seed``, ``seed + 1``, …; a joint
    model's prediction (and each of its hybrids') is the mean of those fits' (a seed ensemble:
    a fit on a few hundred training spots varies from seed to seed, the baselines do not).

    Returns ``{method: {"msi": (spots × m/z), "rna": (spots × genes)}}`` and per-method seconds
    (each method's own; a joint model's are the sum of its fits', wherever they ran; the source
    components that the baselines and hybrids share are under :data:`COMPONENTS`).
    """
    model_params = model_params or {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    secs: dict[str, float] = {}
    if sparse and xy is None:
        raise ValueError("crossmodal_cv: sparse=True needs the spot positions xy")
    inner = {}  # per fold: spatial splits of its training spots, for the lasso's penalties
    pcs_memo: dict = {}
    pcs_secs = [0.0]  # time in the shared components, charged to no method

    def pcs(src, f, train):
        """The baselines' source components of fold ``f`` (one SVD per fold and direction,
        shared by every baseline and hybrid: at 20,000 spots × 2,000 genes each is ~5 s)."""
        if (src, f) not in pcs_memo:
            t = time.perf_counter()
            pcs_memo[src, f] = _pcs(Sr if src == "rna" else Sm, train, n_comps, seed)
            pcs_secs[0] += time.perf_counter() - t
        return pcs_memo[src, f]

    def elapsed(t0, pcs0):
        """Seconds since ``t0`` less those spent in the shared components since then."""
        return time.perf_counter() - t0 - (pcs_secs[0] - pcs0)

    def sparse_predict(f, train, test, src, Z=None):
        """Fold ``f``'s ``sparse`` (``Z`` None) or ``<model>_sparse`` prediction of the held-out
        targets from ``src``: the lasso's inputs are the base ridge's (those of ``ridge`` or of
        the ``<model>_ridge`` hybrid) and every smoothed source feature."""
        S, Y = (Sr, Xm) if src == "rna" else (Sm, Xr)
        if f not in inner:
            inner[f] = inner_splits(xy, train, seed=seed + 1)
        base = pcs(src, f, train)
        if Z is not None:
            base = embedding_inputs(Z, train, base)
        return sparse_fold(np.c_[base, S], Y, train, test, inner[f],
                           base=None if sparse_margin is None else base,
                           margin=sparse_margin or 0.0)

    for method in baselines:
        t0, pcs0 = time.perf_counter(), pcs_secs[0]
        P = _empty(Xr, Xm)
        for f, train in train_masks.items():
            test = folds == f
            for src, tgt in directions:
                S, Y = (Sr, Xm) if src == "rna" else (Sm, Xr)
                P[tgt][test] = baseline_fold(method, S, Y, train, test, n_comps=n_comps,
                                             ridge_alpha=ridge_alpha, knn_k=knn_k, seed=seed,
                                             Z=pcs(src, f, train))
        preds[method], secs[method] = P, elapsed(t0, pcs0)
    if sparse:
        t0, pcs0 = time.perf_counter(), pcs_secs[0]
        P = _empty(Xr, Xm)
        for f, train in train_masks.items():
            test = folds == f
            for src, tgt in directions:
                P[tgt][test] = sparse_predict(f, train, test, src)
        preds[SPARSE_BASELINE], secs[SPARSE_BASELINE] = P, elapsed(t0, pcs0)
        log.info("impute: sparse cross-modal CV in %.1fs", secs[SPARSE_BASELINE])
    # the models' fold fits, their results taken in order: model by model, fold by fold
    if fitted is None and models:
        fitted = FoldFits(rna_ad, msi_ad).map(model_fold_jobs(
            models, model_params, folds, train_masks, n_top_genes=n_top_genes, seed=seed,
            device=device, transductive=transductive, directions=directions,
            n_seeds=model_seeds))
    for name in models:
        # out-of-fold arrays only for the methods this run makes (80 MB each at 10^4 spots ×
        # 2,000 genes): the hybrids' and the sparse hybrids' only when asked for
        P = _empty(Xr, Xm)
        H = _empty(Xr, Xm) if hybrid else None
        L = _empty(Xr, Xm) if sparse else None
        total = t_sparse = 0.0
        arrays = {"decoder": P, "hybrid": H, "sparse": L}
        n_fits = max(int(model_seeds), 1)
        for f, train in train_masks.items():
            test = folds == f
            sums: dict = {}  # (kind, target): the fold's predictions summed over its fits

            def add(kind, tgt, values):
                sums[kind, tgt] = sums.get((kind, tgt), 0.0) + np.asarray(values, np.float64)

            for _ in range(n_fits):  # one fit per model seed (a seed ensemble)
                out, genes, s = fitted.take(name, test)
                if gene_index is not None and len(genes) != len(gene_index):
                    raise ValueError(f"{name}: the model's genes differ from the scored genes")
                for src, tgt in directions:
                    add("decoder", tgt, out[tgt])
                    if hybrid:
                        add("hybrid", tgt, ridge_on_embedding(
                            out[f"z_from_{src}"], Xm if tgt == "msi" else Xr, train, test,
                            pcs(src, f, train) if hybrid == "stack" else None))
                if sparse:
                    t1, pcs1 = time.perf_counter(), pcs_secs[0]
                    for src, tgt in directions:
                        add("sparse", tgt, sparse_predict(f, train, test, src,
                                                          out[f"z_from_{src}"]))
                    t_sparse += elapsed(t1, pcs1)
                total += s
            for (kind, tgt), v in sums.items():  # the mean; one fit: its values, bit for bit
                arrays[kind][tgt][test] = v / n_fits
        preds[name], secs[name] = P, total
        if hybrid:
            preds[f"{name}_ridge"], secs[f"{name}_ridge"] = H, total
        if sparse:
            preds[f"{name}_sparse"], secs[f"{name}_sparse"] = L, total + t_sparse
        log.info("impute: %s cross-modal CV in %.1fs (%d folds)", name, total, len(train_masks))
    secs[COMPONENTS] = pcs_secs[0]
    return preds, secs
