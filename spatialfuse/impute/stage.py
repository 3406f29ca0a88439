"""The impute stage: denoised layers, cross-modal predictions and held-out scores.

Two tasks, each scored only on data the method did not see:

* **denoising within each modality**, every method scored on the same hidden random spots —
  ``knn_smooth`` (one neighbour-averaging step of fixed strength ``alpha``; scored by
  predicting each hidden spot from its visible neighbours),
  ``graph_smooth`` (graph-Laplacian smoothing, strength chosen per feature on hidden random
  spots; scored on hidden spots with the strength chosen on the other folds) and
  ``{model}_reconstruction`` for the joint models of ``denoise_models`` (each hidden spot's
  modality predicted, by a model fitted without that spot, from its other modality and its
  neighbours);
* **cross-modal prediction** genes → metabolites and metabolites → genes — baselines ``ridge``
  and ``knn`` on spatially smoothed source features, and the joint models of ``models``
  (``vae``, ``gnn``, ``transformer``, fitted per fold through :func:`spatialfuse.models.api.fit`),
  all in spatially blocked cross-validation (contiguous blocks, a buffer ring around the held-out
  block left out of training).

Per feature: Pearson r, Spearman r and map SSIM (:mod:`.scores`); for cross-modal prediction also
the within-block Pearson r (``pearson_r_block``: r inside each held-out block, averaged over the
blocks), reported next to the pooled one because pooled out-of-fold r is biased low by level
shifts between fold models. Layers (never ``X``):
``imputed_knn_smooth``, ``imputed_graph_smooth``, ``imputed_{model}_reconstruction`` on both
modalities; ``imputed_{method}_from_rna``
on MSI and ``imputed_{method}_from_msi`` on RNA (out-of-fold predictions). The RNA modality
returned holds the scored genes only (the highly variable genes the joint models use; every
gene stays in ``paired.h5mu``): padding each layer to all genes with NaN made it a dense
spots × all-genes array per method (peak memory 3.71 → 2.45 GB for 4,000 spots × 18,000
genes, baselines only).
"""

from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from .crossmodal import (
    BASELINES,
    COMPONENTS,
    DIRECTIONS,
    KRIGING,
    LOCATION,
    SPARSE_BASELINE,
    crossmodal_cv,
    model_fold_jobs,
    score_column,
    stronger_reference,
)
from .cv import (auto_buffer_um, heldout_distances, krige_cv, location_cv, spatial_blocks,
                 training_masks)
from .fitpool import FoldFits
from .scores import (
    SPATIAL_MORAN_MIN,
    feature_clusters,
    feature_scores,
    morans_i,
    paired_median_difference,
    spot_pitch_um,
    summarise,
)
from .smooth import (
    DEFAULT_STRENGTHS,
    choose_strength,
    graph_smooth,
    heldout_entry_folds,
    heldout_entry_predictions,
    heldout_spot_folds,
    heldout_neighbour_prediction,
    knn_smooth,
)

log = logging.getLogger(__name__)

#: Defaults of the impute config section (the schema carries the same values).
DEFAULTS = dict(k=6, alpha=0.5, n_blocks=5, buffer_um=None, n_comps=30, ridge_alpha=None,
                knn_k=10, models=["vae", "gnn", "transformer"], model_max_steps=400,
                model_min_epochs=30, model_min_epochs_max_steps=2000,
                n_top_genes=None, strengths=list(DEFAULT_STRENGTHS), denoise_folds=5,
                denoise_models=["gnn"], kl_weight=0.1, block_mask_prob=0.0, msi_weight=1.0,
                depth_head=True, cross_weight=0.0, linear_path=False, transductive=False,
                sparse_links=False, sparse_margin=2.0, unmeasured_extrapolation="auto",
                model_seeds=1)
#: Impute keys passed to the cross-modal per-fold fits as model parameters (opt-in model
#: behaviour that only impute's fits use; see :func:`_model_params`); ``depth_head`` also goes
#: to the denoising fits.
FOLD_FIT_KEYS = ("depth_head", "cross_weight", "linear_path")
MODEL_NAMES = ("vae", "gnn", "transformer")
#: Feature groups of the held-out-entries score (each hides its own random spot folds).
ENTRY_GROUPS = 10


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)


def scored_genes(rna: ad.AnnData, n_top_genes: int | None = None) -> np.ndarray:
    """Column indices of the genes that are predicted and scored: the highly variable genes
    (at most ``n_top_genes``), selected exactly as the joint models select them."""
    from ..models import prepare_inputs

    probe = ad.AnnData(np.zeros((rna.n_obs, 1), np.float32), obs=pd.DataFrame(index=rna.obs_names))
    inputs = prepare_inputs(rna, probe, n_top_genes)
    return rna.var_names.get_indexer(inputs.rna_features)


def _model_params(names, model_params: dict, max_steps, kl_weight,
                  block_mask_prob: float = 0.0, msi_weight=None,
                  fold_fit: dict | None = None, min_epochs: int = 0,
                  min_epochs_max_steps: int | None = None) -> dict:
    """Each model's config section, with impute's caps/overrides for its per-fold fits
    (``block_mask_prob``: whole-batch modality masking of the GNN and the Transformer, for the
    cross-modal fits, whose held-out block lacks the target at every neighbour too;
    ``msi_weight``: the metabolite term's weight, full for prediction; ``fold_fit``: the
    :data:`FOLD_FIT_KEYS` of the cross-modal fits — ``depth_head``, ``cross_weight``,
    ``linear_path``, model parameters that only these fits set; off/0 values are left out;
    ``min_epochs``: the step cap stops no fit before this many epochs, so sections of thousands
    of spots, whose epochs take many steps, are not cut off after a few; up to
    ``min_epochs_max_steps`` steps)."""
    out = {}
    for n in names:
        p = dict(model_params.get(n, {}))
        for key, value in (fold_fit or {}).items():
            if value:
                p[key] = value
        if block_mask_prob and n in ("gnn", "transformer"):
            p["block_mask_prob"] = float(block_mask_prob)
        p.pop("n_top_genes", None)  # one gene set for every method: impute.n_top_genes
        if max_steps is not None:
            p["max_steps"] = int(min(int(p.get("max_steps") or max_steps), int(max_steps)))
        if min_epochs:
            p["min_epochs"] = int(min_epochs)
            if min_epochs_max_steps:
                p["min_epochs_max_steps"] = int(min_epochs_max_steps)
        if kl_weight is not None:
            p["kl_weight"] = float(kl_weight)
        if msi_weight is not None:  # prediction wants the metabolite decoder at full weight
            p["msi_weight"] = float(msi_weight)
        out[n] = p
    return out


def crossmodal_fit_params(models, model_params: dict | None, p: dict) -> dict:
    """The model parameters of the cross-modal CV's fold fits for the impute settings ``p``
    (:data:`DEFAULTS` filled in): each model's config section with impute's step cap, KL and
    metabolite weights, block masking and :data:`FOLD_FIT_KEYS` (see :func:`_model_params`);
    the same for the stage, the unmeasured spots' refit and the benchmarks."""
    return _model_params(models, model_params or {}, p["model_max_steps"], p["kl_weight"],
                         p["block_mask_prob"], msi_weight=p["msi_weight"],
                         fold_fit={k: p[k] for k in FOLD_FIT_KEYS},
                         min_epochs=p["model_min_epochs"],
                         min_epochs_max_steps=p["model_min_epochs_max_steps"])


def cv_folds(xy: np.ndarray, p: dict, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray], float]:
    """The cross-modal CV's held-out block per spot, training spots per block and buffer (µm)
    for the impute settings ``p``: the same for every caller given the spots and the seed."""
    folds = spatial_blocks(xy, int(p["n_blocks"]), seed)
    buffer = auto_buffer_um(xy) if p["buffer_um"] is None else float(p["buffer_um"])
    masks = training_masks(xy, folds, buffer)
    too_small = [f for f, m in masks.items() if m.sum() < 10]
    if too_small:
        raise ValueError(f"impute: blocks {too_small} leave fewer than 10 training spots with a "
                         f"{buffer:.0f} um buffer; lower impute.buffer_um or impute.n_blocks")
    return folds, masks, buffer


def _rows(scores: pd.DataFrame, modality: str, task: str, method: str, features,
          clusters: np.ndarray | None = None) -> pd.DataFrame:
    """``feature_scores.tsv``'s rows of one method; ``clusters``: the cross-modal tasks'
    clusters of co-varying target features (the verdicts' bootstrap units, so that pooling
    over samples can resample them too; empty for the other tasks)."""
    out = scores.assign(modality=modality, task=task, method=method, feature=list(features),
                        cluster=pd.array(clusters if clusters is not None
                                         else [None] * len(scores), dtype="Int64"))
    return out.reindex(columns=["modality", "task", "method", "feature", "pearson_r",
                                "spearman_r", "ssim", "pearson_r_block", "cluster"])


def run_impute(rna: ad.AnnData, msi: ad.AnnData, params: dict, seed: int = 0,
               model_params: dict | None = None, device: str = "cpu", workers: int = 1):
    """Denoise both modalities and predict each from the other, scored on held-out data.

    ``params``: the impute config section (missing keys take :data:`DEFAULTS`);
    ``model_params``: the model config sections of the joint models in ``params["models"]``;
    ``workers``: processes for the joint models' fold fits (:class:`.fitpool.FoldFits`).
    Returns (rna, msi, metrics, per-feature table); the inputs are not modified. Every
    computation runs on one CPU thread (BLAS included), here and in each worker, so the
    numbers depend neither on the cores a job gets nor on ``workers``.
    """
    from ..models.api import fixed_threads

    with fixed_threads(), FoldFits(rna, msi, workers, device) as fits:
        return _run_impute(rna, msi, params, seed, model_params, device, fits)


def _run_impute(rna: ad.AnnData, msi: ad.AnnData, params: dict, seed: int,
                model_params: dict | None, device: str, fits: FoldFits):
    p = {**DEFAULTS, **(params or {})}
    t_start = time.perf_counter()
    xy = np.asarray(rna.obsm[Key.obsm.spatial], float)
    k, alpha = int(p["k"]), float(p["alpha"])
    genes = scored_genes(rna, p["n_top_genes"])
    gene_names = rna.var_names[genes]
    # outputs: the scored genes (never the whole gene matrix dense) and every m/z; the model
    # fits below read the full input ``rna`` (their gene selection is the one that chose these)
    rna_out, msi = rna[:, genes].copy(), msi.copy()
    Xr, Xm = _dense(rna_out.X), _dense(msi.X)
    metrics: dict = {"n_spots": int(rna.n_obs), "n_genes_scored": int(len(genes)),
                     "n_mz": int(msi.n_vars), "k": k, "alpha": alpha}
    parts = []

    # every joint-model fit of both CVs is submitted now: the workers (if any) fit while this
    # process smooths, scores and fits the baselines, and each result is taken where it is used
    dfolds = heldout_spot_folds(rna.n_obs, int(p["denoise_folds"]), seed)
    den_models = [m for m in p["denoise_models"] if m in MODEL_NAMES]
    dparams = _model_params(den_models, model_params or {}, p["model_max_steps"],
                            p["kl_weight"], msi_weight=p["msi_weight"],
                            fold_fit={"depth_head": p["depth_head"]},
                            min_epochs=p["model_min_epochs"],
                            min_epochs_max_steps=p["model_min_epochs_max_steps"])
    dsplit = [(f, dfolds == f) for f in np.unique(dfolds)]
    den_jobs = model_fold_jobs(den_models, dparams, dfolds, {f: ~test for f, test in dsplit},
                               n_top_genes=p["n_top_genes"], seed=seed, device=device)
    folds, masks, buffer = cv_folds(xy, p, seed)
    models = [m for m in p["models"] if m in MODEL_NAMES]
    mparams = crossmodal_fit_params(models, model_params, p)
    cross_jobs = model_fold_jobs(models, mparams, folds, masks, n_top_genes=p["n_top_genes"],
                                 seed=seed, device=device, transductive=bool(p["transductive"]),
                                 n_seeds=int(p["model_seeds"]))
    fitted = fits.map(den_jobs + cross_jobs)

    # ---- denoising within each modality, scored on spots the smoother did not see
    denoise: dict = {}
    for name, a, Xs, feats in (("rna", rna_out, Xr, gene_names), ("msi", msi, Xm, msi.var_names)):
        a.layers[Key.layers.imputed("knn_smooth")] = knn_smooth(Xs, xy, k, alpha).astype(np.float32)
        sc = feature_scores(heldout_neighbour_prediction(Xs, xy, dfolds, k), Xs, xy)
        parts.append(_rows(sc, name, "denoise", "knn_smooth", feats))
        denoise[name] = {"knn_smooth": summarise(sc)}
        ch = choose_strength(Xs, xy, dfolds, p["strengths"], k)
        a.layers[Key.layers.imputed("graph_smooth")] = graph_smooth(
            Xs, xy, ch["strength"], k).astype(np.float32)
        a.var[Key.var.smooth_strength] = np.asarray(ch["strength"], float)
        sc = feature_scores(ch["heldout"], Xs, xy)
        parts.append(_rows(sc, name, "denoise", "graph_smooth", feats))
        denoise[name]["graph_smooth"] = {**summarise(sc),
                                         "median_strength": float(np.median(ch["strength"]))}
    # model-based reconstruction: each hidden spot's modality predicted by a joint model that
    # never saw the spot, from the spot's other modality and its neighbours (J-invariant)
    for name in den_models:
        seconds = 0.0  # the model's fits (summed wherever they ran) and their scores
        P = {"rna": np.full(Xr.shape, np.nan, np.float32),  # float32: the layer it becomes
             "msi": np.full(Xm.shape, np.nan, np.float32)}
        for _, test in dsplit:
            out, _, s = fitted.take(name, test)
            P["rna"][test], P["msi"][test] = out["rna"], out["msi"]
            seconds += s
        t0 = time.perf_counter()
        method = f"{name}_reconstruction"
        for mod, a, Y, feats in (("rna", rna_out, Xr, gene_names),
                                 ("msi", msi, Xm, msi.var_names)):
            sc = feature_scores(P[mod], Y, xy)
            parts.append(_rows(sc, mod, "denoise", method, feats))
            denoise[mod][method] = {
                **summarise(sc), "seconds": round(seconds + time.perf_counter() - t0, 3)}
            a.layers[Key.layers.imputed(method)] = P[mod]
    metrics["denoise"] = denoise
    metrics["denoise_cv"] = {"scheme": "random_spots", "n_folds": int(len(np.unique(dfolds))),
                             "models": den_models, "depth_head": p["depth_head"]}

    # ---- held-out entries: random (spot, feature) entries hidden, per feature group
    entries: dict = {}
    for name, X, feats in (("rna", Xr, gene_names), ("msi", Xm, msi.var_names)):
        groups, efolds = heldout_entry_folds(X.shape[0], X.shape[1], int(p["denoise_folds"]),
                                             ENTRY_GROUPS, seed)
        entries[name] = {}
        preds = heldout_entry_predictions(X, xy, groups, efolds, p["strengths"], k)
        for method in den_models:  # spot-hidden predictions: they never saw the entry either
            a = rna_out if name == "rna" else msi
            preds[f"{method}_reconstruction"] = np.asarray(
                a.layers[Key.layers.imputed(f"{method}_reconstruction")], float)
        for method, P in preds.items():
            sc = feature_scores(P, X, xy)
            parts.append(_rows(sc, name, "heldout_entries", method, feats))
            entries[name][method] = summarise(sc)
    metrics["heldout_entries"] = entries
    metrics["heldout_entries_cv"] = {
        "scheme": "random_entries", "n_feature_groups": ENTRY_GROUPS,
        "n_folds": int(p["denoise_folds"]),
        "note": "each feature group hides its own random spot folds; model reconstructions "
                "are the hidden-spot ones (they saw none of the spot's own modality)"}

    # ---- cross-modal prediction, spatially blocked CV (the models' fits submitted above)
    Sr, Sm = knn_smooth(Xr, xy, k, alpha), knn_smooth(Xm, xy, k, alpha)
    preds, secs = crossmodal_cv(
        Xr, Xm, Sr, Sm, folds, masks, baselines=BASELINES, models=models, model_params=mparams,
        rna_ad=rna, msi_ad=msi, gene_index=genes, n_comps=int(p["n_comps"]),
        ridge_alpha=p["ridge_alpha"], knn_k=int(p["knn_k"]), n_top_genes=p["n_top_genes"],
        seed=seed, device=device, transductive=bool(p["transductive"]),
        sparse=bool(p["sparse_links"]), xy=xy,
        sparse_margin=None if p["sparse_margin"] is None else float(p["sparse_margin"]),
        fitted=fitted, model_seeds=int(p["model_seeds"]))
    del Sr, Sm  # the baselines' smoothed sources: two more spots × features arrays
    baselines = [m for m in (*BASELINES, SPARSE_BASELINE) if m in preds]
    cross: dict = {}
    # the second location reference, kriged for both targets at once (one decomposition of
    # each fold's covariances serves both)
    t0 = time.perf_counter()
    kriged = dict(zip(("msi", "rna"), krige_cv([Xm, Xr], xy, folds, masks, spot_pitch_um(xy),
                                               seed)))
    krige_secs = (time.perf_counter() - t0) / 2  # shared: half in each target's `seconds`
    for src, tgt in DIRECTIONS:
        task = f"{src}_to_{tgt}"
        cross[task] = {}
        Y, feats = (Xm, msi.var_names) if tgt == "msi" else (Xr, gene_names)
        spatial = morans_i(Y, xy, k) >= SPATIAL_MORAN_MIN
        # features that move together are resampled together by the verdicts' bootstrap
        clusters = feature_clusters(Y)
        per_feature: dict[str, pd.DataFrame] = {}
        for method, P in preds.items():
            sc = feature_scores(P[tgt], Y, xy, blocks=folds)
            per_feature[method] = sc
            parts.append(_rows(sc, tgt, task, score_column(method, src), feats, clusters))
            cross[task][method] = {**summarise(sc, spatial), "seconds": round(secs[method], 3)}
            tgt_ad = msi if tgt == "msi" else rna_out
            # the out-of-fold predictions are float32 already: the layer is that array, and
            # its scores above are the layer's own
            tgt_ad.layers[Key.layers.imputed(score_column(method, src))] = P[tgt]
        # the references: what the target's location alone gives under the same blocks (no
        # layer, never best, not a baseline; a method's lead over the stronger of the two,
        # `<kind>_vs_location` below, is what the source modality adds)
        t0 = time.perf_counter()
        refs = {LOCATION: feature_scores(location_cv(Y, xy, folds, masks), Y, xy, blocks=folds)}
        ref_secs = {LOCATION: time.perf_counter() - t0}
        t0 = time.perf_counter()
        refs[KRIGING] = feature_scores(kriged.pop(tgt), Y, xy, blocks=folds)
        ref_secs[KRIGING] = krige_secs + time.perf_counter() - t0
        for ref, sc in refs.items():
            parts.append(_rows(sc, tgt, task, score_column(ref, src), feats, clusters))
            cross[task][ref] = {**summarise(sc, spatial), "seconds": round(ref_secs[ref], 3)}

        def best_of(methods, key="median_pearson", res=cross[task]):
            """The method with the highest ``key`` (NaN ranks last; the first of ties)."""
            return max(methods, key=lambda m: np.nan_to_num(res[m][key], nan=-np.inf))

        cross[task]["best_method"] = best_of(list(preds))
        model_methods = [m for m in preds if m not in baselines]
        # the joint models' own predictions ("decoder") apart from all model-based ones: the
        # <model>_ridge hybrids stack the baseline's components with the latent, so a hybrid
        # win is partly the baseline's
        dec = [m for m in model_methods if m in MODEL_NAMES]
        for suffix in ("", "_spatial", "_block"):
            key = f"median_pearson{suffix}"
            # the point estimates, and whether a lead is more than the spread of the
            # per-feature scores allows (paired per feature, bootstrap over clusters of
            # co-varying features; see paired_median_difference)
            col = "pearson_r_block" if suffix == "_block" else "pearson_r"
            keep = spatial if suffix == "_spatial" else np.ones(len(spatial), bool)

            def paired(m: str, ref: pd.DataFrame) -> dict:
                return paired_median_difference(per_feature[m][col].to_numpy(float)[keep],
                                                ref[col].to_numpy(float)[keep],
                                                seed=seed, clusters=clusters[keep])

            # each kind's best method against location alone (the stronger reference on this
            # score): what the source modality adds to spatial extrapolation, with the same
            # paired interval as the verdicts below
            ref = stronger_reference(cross[task], key)
            for who, pool in (("baseline", baselines), ("model", model_methods),
                              ("decoder", dec)):
                if pool:
                    m = best_of(pool, key)
                    cross[task][f"{who}_vs_location{suffix}"] = {
                        "method": m, "reference": ref, **paired(m, refs[ref])}
            if model_methods:
                b = best_of(baselines, key)
                base = cross[task][b][key]
                for who, pool in (("model", model_methods), ("decoder", dec)):
                    if not pool:
                        continue
                    m = best_of(pool, key)
                    if who == "model":
                        lead = float(cross[task][m][key] - base)
                        cross[task][f"model_minus_baseline_{key}"] = lead
                    cross[task][f"{who}_beats_baselines{suffix}"] = bool(cross[task][m][key] > base)
                    cross[task][f"{who}_vs_baselines{suffix}"] = {
                        "method": m, "baseline": b, **paired(m, per_feature[b])}
        if model_methods:
            cross[task]["best_model_method"] = best_of(model_methods)
    metrics["crossmodal"] = cross
    n_train = [int(m.sum()) for m in masks.values()]
    dist = heldout_distances(xy, folds, masks)
    metrics["cv"] = {"scheme": "spatial_blocks", "n_blocks": int(len(masks)),
                     "buffer_um": float(buffer), "min_training_spots": int(min(n_train)),
                     # how far from its training spots each held-out spot was predicted: the
                     # range over which the scores hold (predictions of unmeasured spots)
                     "heldout_distance_um": {q: float(np.nanpercentile(dist, v)) for q, v in
                                             (("median", 50), ("p90", 90), ("max", 100))},
                     "models": models, "model_max_steps": p["model_max_steps"],
                     "model_min_epochs": p["model_min_epochs"],
                     "model_min_epochs_max_steps": p["model_min_epochs_max_steps"],
                     "kl_weight": p["kl_weight"], "block_mask_prob": p["block_mask_prob"],
                     "msi_weight": p["msi_weight"], **{k: p[k] for k in FOLD_FIT_KEYS},
                     "transductive": bool(p["transductive"]),
                     "model_seeds": int(p["model_seeds"]),
                     # the source components every baseline and hybrid reads, computed once
                     # per fold and direction (not in any one method's seconds)
                     "components_seconds": round(secs[COMPONENTS], 3),
                     "sparse_links": bool(p["sparse_links"]),
                     "sparse_margin": p["sparse_margin"],
                     "reference": f"{LOCATION}: each held-out spot's target from the "
                                  "nearest training spots by position alone; "
                                  f"{KRIGING}: kriged from the training spots with a "
                                  "covariance fitted per feature (neither reads the source "
                                  "modality); what a method scores above the stronger of "
                                  "the two is what the source adds to spatial "
                                  "extrapolation (<baseline|model|decoder>_vs_location)"}
    metrics["seconds"] = round(time.perf_counter() - t_start, 3)
    table = pd.concat(parts, ignore_index=True)
    for task, res in cross.items():
        log.info("impute %s, median held-out r: %s", task, ", ".join(
            f"{m} {v['median_pearson']:.3f}" for m, v in res.items()
            if isinstance(v, dict) and "median_pearson" in v))
    return rna_out, msi, metrics, table
