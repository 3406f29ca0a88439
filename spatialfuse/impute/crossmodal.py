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
  component space.

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

log = logging.getLogger(__name__)

DIRECTIONS = (("rna", "msi"), ("msi", "rna"))  # (source, target)
BASELINES = ("ridge", "knn")
RIDGE_ALPHAS = np.logspace(-2, 4, 13)


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
                  seed: int = 0) -> np.ndarray:
    """Predict ``Y[test]`` from source features ``S`` with a model fitted on ``train`` rows only
    (standardisation and PCA included)."""
    Z = _pcs(S, train, n_comps, seed)
    if method == "ridge":
        from sklearn.linear_model import Ridge, RidgeCV

        m = RidgeCV(alphas=RIDGE_ALPHAS) if ridge_alpha is None else Ridge(alpha=float(ridge_alpha))
        return m.fit(Z[train], Y[train]).predict(Z[test])
    if method == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        k = int(min(knn_k, train.sum()))
        m = KNeighborsRegressor(n_neighbors=k, weights="distance", algorithm="kd_tree")
        return m.fit(Z[train], Y[train]).predict(Z[test])
    raise ValueError(f"unknown baseline {method!r}; available: {BASELINES}")


def model_fold(name: str, rna, msi, train: np.ndarray, test: np.ndarray, params: dict, *,
               n_top_genes: int | None = None, seed: int = 0, device: str = "cpu",
               transductive: bool = False):
    """Fit joint model ``name`` on ``train`` spots (standardisation statistics from them too)
    and predict both modalities of ``test`` spots, each without its own values.

    ``transductive``: one fit per direction, each also trained on the source modality of the
    spots outside ``train`` (see the module docstring); about twice the time.

    Returns ({"msi": msi_hat, "rna": rna_hat} in log-normalised units, rna feature names,
    seconds).
    """
    from ..models import prepare_inputs
    from ..models.api import fit, fixed_threads

    t0 = time.perf_counter()
    with fixed_threads():
        inputs = prepare_inputs(rna, msi, n_top_genes, stats_mask=train)
    if transductive:  # genes -> metabolites from a fit that saw every spot's genes, and back
        fr = fit(name, inputs, params, seed=seed, device=device, train_mask=train,
                 transductive="rna")
        fm = fit(name, inputs, params, seed=seed, device=device, train_mask=train,
                 transductive="msi")
    else:
        fr = fm = fit(name, inputs, params, seed=seed, device=device, train_mask=train)
    out = {"msi": inputs.to_lognormal("msi", fr.predict_msi_from_rna(spots=test)),
           "rna": inputs.to_lognormal("rna", fm.predict_rna_from_msi(spots=test)),
           "z_from_rna": source_embedding(fr, "rna"), "z_from_msi": source_embedding(fm, "msi")}
    return out, inputs.rna_features, time.perf_counter() - t0


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
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    F = StandardScaler().fit(Z[train]).transform(Z)
    if pcs is not None:
        F = np.c_[pcs, F]
    m = RidgeCV(alphas=RIDGE_ALPHAS).fit(F[train], Y[train])
    return m.predict(F[test])


def _empty(Xr: np.ndarray, Xm: np.ndarray) -> dict[str, np.ndarray]:
    return {"msi": np.full(Xm.shape, np.nan), "rna": np.full(Xr.shape, np.nan)}


def crossmodal_cv(Xr: np.ndarray, Xm: np.ndarray, Sr: np.ndarray, Sm: np.ndarray,
                  folds: np.ndarray, train_masks: dict[int, np.ndarray], *,
                  baselines=BASELINES, models=(), model_params: dict | None = None,
                  rna_ad=None, msi_ad=None, gene_index: np.ndarray | None = None,
                  n_comps: int = 30, ridge_alpha: float | None = None, knn_k: int = 10,
                  n_top_genes: int | None = None, seed: int = 0, device: str = "cpu",
                  hybrid: str | None = "stack", transductive: bool = False):
    """Out-of-fold predictions of every method in both directions.

    ``Xr`` (spots × scored genes) and ``Xm`` (spots × m/z): measured log-normalised targets;
    ``Sr``/``Sm``: the smoothed source features of the baselines; ``rna_ad``/``msi_ad``: the
    paired AnnData the models read (needed when ``models`` is not empty); ``gene_index``: the
    columns of ``rna_ad`` that ``Xr`` holds (the models' genes must be these);
    ``transductive``: per-direction model fits that also train on the source modality of the
    held-out and buffer spots (:func:`model_fold`).

    Returns ``{method: {"msi": (spots × m/z), "rna": (spots × genes)}}`` and per-method seconds.
    """
    model_params = model_params or {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    secs: dict[str, float] = {}
    for method in baselines:
        t0 = time.perf_counter()
        P = _empty(Xr, Xm)
        for f, train in train_masks.items():
            test = folds == f
            for src, tgt in DIRECTIONS:
                S, Y = (Sr, Xm) if src == "rna" else (Sm, Xr)
                P[tgt][test] = baseline_fold(method, S, Y, train, test, n_comps=n_comps,
                                             ridge_alpha=ridge_alpha, knn_k=knn_k, seed=seed)
        preds[method], secs[method] = P, time.perf_counter() - t0
    for name in models:
        P, H = _empty(Xr, Xm), _empty(Xr, Xm)
        total = 0.0
        for f, train in train_masks.items():
            test = folds == f
            out, genes, s = model_fold(name, rna_ad, msi_ad, train, test,
                                       model_params.get(name, {}), n_top_genes=n_top_genes,
                                       seed=seed, device=device, transductive=transductive)
            if gene_index is not None and len(genes) != len(gene_index):
                raise ValueError(f"{name}: the model's genes differ from the scored genes")
            P["msi"][test], P["rna"][test] = out["msi"], out["rna"]
            if hybrid:
                stack = hybrid == "stack"
                H["msi"][test] = ridge_on_embedding(
                    out["z_from_rna"], Xm, train, test,
                    _pcs(Sr, train, n_comps, seed) if stack else None)
                H["rna"][test] = ridge_on_embedding(
                    out["z_from_msi"], Xr, train, test,
                    _pcs(Sm, train, n_comps, seed) if stack else None)
            total += s
        preds[name], secs[name] = P, total
        if hybrid:
            preds[f"{name}_ridge"], secs[f"{name}_ridge"] = H, total
        log.info("impute: %s cross-modal CV in %.1fs (%d folds)", name, total, len(train_masks))
    return preds, secs
