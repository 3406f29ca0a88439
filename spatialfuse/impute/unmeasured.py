"""Metabolites of the ST spots the MSI does not cover, predicted from their genes.

When the MSI acquisition covers only part of the ST section (a smaller raster, an adjacent
section that does not reach everywhere, tissue lost in one of them), the align stage pairs only
the spots with enough MSI coverage. Their genes are measured everywhere, so the metabolites of
the other spots can be predicted from them: by the genes → metabolites method that predicted
the cross-validation's held-out blocks best (``metrics["crossmodal"]["rna_to_msi"]
["best_method"]``), refitted on every paired spot, and with the accuracy that method reached on
those held-out blocks. A held-out block is the situation of an unmeasured region (contiguous,
no target values in it or around it), so its score is the honest estimate — up to the distance
from measured spots at which the cross-validation scored it: spots further out are flagged
(``beyond_validated_distance``), since nothing measured how predictions degrade there.

The genes are not the only evidence: the measured MSI next to an unmeasured region also tells
what its metabolites are likely to be. Each metabolite is therefore also *extrapolated* from
the measured spots by kriging with a covariance fitted per metabolite
(:func:`.cv.krige_extrapolate`; it was inverse-distance weights of the nearest measured spots
until 2026-12-05, which kriging beat at held-back regions: ``benchmarks/RESULTS.md``), and the
two are averaged with equal weight after standardising each over the unmeasured spots
(:func:`combine_standardised`). Whether that average is used is decided on the same
cross-validation (``impute.unmeasured_extrapolation: auto``): every held-out block's
out-of-fold genes prediction is averaged with that block's extrapolation from the spots outside
it, and the average is kept only where its median within-block r over the
metabolites beats the genes alone. Both parts and the average are written as layers.

Nothing here reads an unmeasured spot's MSI (there is none: the paired MSI is placed on the
covered spots and the others are prediction targets, which no method reads).
"""

from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..constants import Key
from ..errors import InputError
from .crossmodal import BASELINES, SPARSE_BASELINE, crossmodal_cv
from .cv import krige_extrapolate
from .smooth import knn_smooth
from .scores import feature_scores, spot_pitch_um
from .stage import (
    DEFAULTS,
    MODEL_NAMES,
    _dense,
    crossmodal_fit_params,
    cv_folds,
    scored_genes,
)

log = logging.getLogger(__name__)


#: Layer names (``imputed_<name>``) of the extrapolation and of the average.
EXTRAPOLATION = "extrapolated_from_msi"
#: The ``unmeasured_extrapolation`` settings.
EXTRAPOLATION_MODES = ("auto", "always", "never")


def combine_standardised(G: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Equal-weight average of two predictions of the same spots (rows) × features (columns),
    each standardised per feature over those spots first (so neither weighs more for a larger
    spread: a genes prediction is shrunk where the genes say little, an extrapolation is not),
    then put back on their mean level and mean spread. A constant column contributes nothing."""
    G, E = np.asarray(G, float), np.asarray(E, float)

    def z(A):
        sd = A.std(0)
        return np.where(sd > 1e-12, (A - A.mean(0)) / np.where(sd > 1e-12, sd, 1.0), 0.0), sd

    zG, sdG = z(G)
    zE, sdE = z(E)
    return 0.5 * (G.mean(0) + E.mean(0)) + 0.25 * (sdG + sdE) * (zG + zE)


def extrapolation_cv(rna: ad.AnnData, msi: ad.AnnData, method: str, p: dict,
                     seed: int) -> dict[str, pd.DataFrame]:
    """Held-out scores, on the cross-validation's blocks of the paired spots, of the
    extrapolation into each block from the spots outside it and of its average with the genes'
    out-of-fold prediction by ``method`` (``msi``'s layer ``imputed_<method>_from_rna``, as
    :func:`~spatialfuse.impute.run_impute` leaves it). Returns per-feature score tables
    (:func:`~spatialfuse.impute.scores.feature_scores`) under ``extrapolation`` and
    ``combined``."""
    layer = Key.layers.imputed(f"{method}_from_rna")
    if layer not in msi.layers:
        raise ValueError(f"msi has no layer {layer!r}: pass the MSI that run_impute returned")
    xy = np.asarray(rna.obsm[Key.obsm.spatial], float)
    folds, masks, _ = cv_folds(xy, p, seed)
    Y = _dense(msi.X).astype(float)
    G = np.asarray(msi.layers[layer], float)
    E, C = np.zeros_like(Y), np.zeros_like(Y)
    pitch = spot_pitch_um(xy)
    for f in masks:
        held = folds == f
        # from every spot outside the block, the buffer included: an unmeasured region borders
        # measured spots too, and the block's own values are never read (the buffer keeps
        # smoothing and graph context from carrying them into a fit; nothing is fitted here)
        E[held] = krige_extrapolate(xy[~held], [Y[~held]], xy[held], pitch, seed=seed + int(f))[0]
        C[held] = combine_standardised(G[held], E[held])
    return {"extrapolation": feature_scores(E, Y, xy, blocks=folds),
            "combined": feature_scores(C, Y, xy, blocks=folds)}


def _median_block(scores: pd.DataFrame) -> float:
    """Median within-block r over the features of a score table (NaN when none has one)."""
    r = scores["pearson_r_block"]
    return float(np.nanmedian(r)) if r.notna().any() else np.nan


def method_parts(method: str) -> dict:
    """``crossmodal_cv`` arguments that produce ``method`` (a baseline, ``sparse``, a joint
    model, or a ``<model>_ridge`` / ``<model>_sparse`` hybrid)."""
    model = method.split("_")[0]
    if method in BASELINES:
        return {"baselines": (method,), "models": (), "hybrid": None, "sparse": False}
    if method == SPARSE_BASELINE:
        return {"baselines": (), "models": (), "hybrid": None, "sparse": True}
    if model in MODEL_NAMES and method in (model, f"{model}_ridge", f"{model}_sparse"):
        return {"baselines": (), "models": (model,),
                "hybrid": "stack" if method.endswith("_ridge") else None,
                "sparse": method.endswith("_sparse")}
    raise ValueError(f"unknown cross-modal method {method!r}")


def predict_unmeasured(st: ad.AnnData, rna: ad.AnnData, msi: ad.AnnData, metrics: dict,
                       table: pd.DataFrame, params: dict, *, seed: int = 0,
                       model_params: dict | None = None, device: str = "cpu",
                       coverage: pd.DataFrame | None = None, sample: str = "",
                       st_path: str | None = None) -> tuple[ad.AnnData, dict]:
    """Metabolites of the spots of ``st`` that are not among the paired spots (``rna``/``msi``),
    predicted from their genes.

    ``metrics``/``table``: what :func:`~spatialfuse.impute.run_impute` returned for the paired
    spots (the method and its held-out scores come from them); ``params``: the impute config
    section; ``coverage``: the align stage's per-spot coverage table (index = ST barcodes).

    ``msi`` must carry the out-of-fold layer ``imputed_<method>_from_rna`` of the chosen method
    (as run_impute returns it): the extrapolation is cross-validated with it.

    Returns (AnnData of the unmeasured spots × m/z — the layers ``imputed_<method>_from_rna``
    (genes), ``imputed_extrapolated_from_msi`` (kriged from the measured spots) and
    ``imputed_<method>_from_rna_and_msi`` (their standardised average), ``X`` the one chosen
    (``uns``/summary ``output``), ``var`` each metabolite's held-out r of the chosen one and of
    each part, ``obs`` the distance to the nearest measured spot —, a summary for
    ``metrics.json``). No unmeasured spot: an empty AnnData and no fit. Runs on one CPU thread,
    like the stage.
    """
    from ..models.api import fixed_threads

    with fixed_threads():
        return _predict_unmeasured(st, rna, msi, metrics, table, params, seed, model_params,
                                   device, coverage, sample, st_path)


def _predict_unmeasured(st, rna, msi, metrics, table, params, seed, model_params, device,
                        coverage, sample, st_path):
    t0 = time.perf_counter()
    p = {**DEFAULTS, **(params or {})}
    missing_pairs = rna.obs_names.difference(st.obs_names)
    if len(missing_pairs):
        raise InputError(f"{len(missing_pairs)} paired spots (e.g. {missing_pairs[0]!r}) are not "
                         "spots of the ingested ST data; rerun align on this ST file",
                         sample=sample or None, path=st_path)
    if not rna.var_names.equals(st.var_names):
        raise InputError("the paired RNA's genes differ from the ingested ST data's; rerun align "
                         "on this ST file", sample=sample or None, path=st_path)
    measured = st.obs_names.isin(rna.obs_names)
    unmeasured = ~measured
    method = metrics["crossmodal"]["rna_to_msi"]["best_method"]
    xy = np.asarray(st.obsm[Key.obsm.spatial], float)
    validated = float(metrics.get("cv", {}).get("heldout_distance_um", {}).get("max", np.nan))
    out = ad.AnnData(np.zeros((int(unmeasured.sum()), msi.n_vars), np.float32),
                     obs=pd.DataFrame(index=st.obs_names[unmeasured]), var=msi.var.copy())
    out.obsm[Key.obsm.spatial] = xy[unmeasured]
    # each metabolite's held-out score under the chosen method (on the paired spots' blocks)
    rows = table[(table["task"] == "rna_to_msi") & (table["method"] == f"{method}_from_rna")]
    rows = rows.set_index("feature").reindex(msi.var_names)
    scores = {"genes": rows.reset_index(drop=True)}
    mode = str(p["unmeasured_extrapolation"])
    if mode not in EXTRAPOLATION_MODES:
        raise ValueError(f"impute.unmeasured_extrapolation must be one of {EXTRAPOLATION_MODES}, "
                         f"not {mode!r}")
    output = "genes"
    if unmeasured.any():
        scores.update(extrapolation_cv(rna, msi, method, p, seed))
    med = {k: _median_block(v) for k, v in scores.items()}
    if unmeasured.any() and (mode == "always"
                             or (mode == "auto" and med["combined"] > med["genes"])):
        output = "combined"
    for part, sc in scores.items():
        out.var[f"heldout_pearson_r_block_{part}"] = sc["pearson_r_block"].to_numpy(float)
    out.var["heldout_pearson_r"] = scores[output]["pearson_r"].to_numpy(float)
    out.var["heldout_pearson_r_block"] = scores[output]["pearson_r_block"].to_numpy(float)
    summary = {"n_spots": int(unmeasured.sum()), "n_measured_spots": int(measured.sum()),
               "method": method, "source": "rna", "validated_distance_um": validated,
               "output": output, "extrapolation": mode,
               "heldout_block_median": {k: None if np.isnan(m) else m for k, m in med.items()}}
    if unmeasured.any():
        order = pd.Index(rna.obs_names).get_indexer(st.obs_names[measured])
        Xm = np.zeros((st.n_obs, msi.n_vars))  # unmeasured rows: prediction targets, never read
        Xm[measured] = _dense(msi.X)[order]
        msi_all = ad.AnnData(Xm.astype(np.float32), obs=pd.DataFrame(index=st.obs_names),
                             var=msi.var.copy())
        msi_all.obsm[Key.obsm.spatial] = xy
        genes = scored_genes(st, p["n_top_genes"])
        Xr = _dense(st.X[:, genes])  # the scored genes only: never the whole matrix dense
        k, alpha = int(p["k"]), float(p["alpha"])
        parts = method_parts(method)
        models = parts["models"]
        mparams = crossmodal_fit_params(models, model_params, p)
        folds = np.where(unmeasured, 0, -1)
        preds, _ = crossmodal_cv(
            Xr, Xm, knn_smooth(Xr, xy, k, alpha), np.zeros_like(Xm), folds, {0: measured},
            baselines=parts["baselines"], models=models, model_params=mparams, rna_ad=st,
            msi_ad=msi_all, gene_index=genes, n_comps=int(p["n_comps"]),
            ridge_alpha=p["ridge_alpha"], knn_k=int(p["knn_k"]), n_top_genes=p["n_top_genes"],
            seed=seed, device=device, hybrid=parts["hybrid"],
            transductive=bool(p["transductive"]), sparse=parts["sparse"], xy=xy,
            sparse_margin=None if p["sparse_margin"] is None else float(p["sparse_margin"]),
            directions=(("rna", "msi"),), model_seeds=int(p["model_seeds"]))
        pred = preds[method]["msi"][unmeasured]  # float32 already; the mask copies it
        extra = krige_extrapolate(xy[measured], [Xm[measured]], xy[unmeasured],
                                  spot_pitch_um(xy), seed=seed)[0].astype(np.float32)
        both = combine_standardised(pred, extra).astype(np.float32)
        out.layers[Key.layers.imputed(f"{method}_from_rna")] = pred
        out.layers[Key.layers.imputed(EXTRAPOLATION)] = extra
        out.layers[Key.layers.imputed(f"{method}_from_rna_and_msi")] = both
        out.X = (both if output == "combined" else pred).copy()
        dist = cKDTree(xy[measured]).query(xy[unmeasured])[0]
        out.obs["distance_to_measured_um"] = dist
        out.obs["beyond_validated_distance"] = dist > validated if np.isfinite(validated) \
            else np.zeros(len(dist), bool)
        summary.update(
            n_beyond_validated_distance=int(out.obs["beyond_validated_distance"].sum()),
            median_distance_to_measured_um=float(np.median(dist)))
    if coverage is not None:
        cov = coverage.reindex(out.obs_names)
        for key in (Key.obs.coverage, Key.obs.n_pixels):
            if key in cov:
                out.obs[key] = cov[key].to_numpy()
    res = metrics["crossmodal"]["rna_to_msi"].get(method, {})
    keys = ("median_pearson", "median_pearson_block", "median_spearman", "median_ssim")
    if output == "combined":
        cols = ("pearson_r", "pearson_r_block", "spearman_r", "ssim")
        res = {key: float(np.nanmedian(scores["combined"][c])) for key, c in zip(keys, cols)}
    # the chosen output's held-out medians (named so that the report's bar chart of the
    # methods' median_pearson leaves them out)
    summary.update({f"heldout_{key[len('median_'):]}_median": float(res.get(key, np.nan))
                    for key in keys})
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    out.uns[Key.uns.spatialfuse] = {"prediction": {
        **summary, "note": "metabolites of ST spots without MSI coverage, predicted from their "
                           "genes (output 'genes') or averaged with an extrapolation from the "
                           "measured spots (output 'combined'); the held-out scores are "
                           "the output's on the paired spots' blocked cross-validation, valid up "
                           "to validated_distance_um from measured spots"}}
    if unmeasured.any():
        log.info("impute: %d ST spots without MSI predicted from genes by %s%s (held-out median "
                 "r %.3f, within blocks %.3f; genes alone %.3f, extrapolation alone %.3f; %d "
                 "further than %.0f um from measured spots, beyond what the CV scored)",
                 summary["n_spots"], method,
                 " averaged with the kriged measured MSI" if output == "combined" else "",
                 summary["heldout_pearson_median"], summary["heldout_pearson_block_median"],
                 *(np.nan if summary["heldout_block_median"].get(k) is None
                   else summary["heldout_block_median"][k] for k in ("genes", "extrapolation")),
                 summary["n_beyond_validated_distance"], validated)
        if summary["n_beyond_validated_distance"]:
            log.warning("impute (%s): %d ST spots without MSI lie further than %.0f um from "
                        "measured spots, beyond any distance the cross-validation scored: their "
                        "predicted metabolites have no held-out accuracy (obs "
                        "'beyond_validated_distance')", sample or "sample",
                        summary["n_beyond_validated_distance"], validated)
    return out, summary
