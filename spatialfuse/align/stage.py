"""The align stage as one function: transform, aligned MSI, paired spots, QC."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans

from ..constants import Key
from ..errors import AlignmentError, InputError
from ..pixels import pixel_side, pixel_xy
from .aggregate import aggregate, overlap_weights
from .features import (
    MsiRaster,
    StPoints,
    in_box,
    lda_posteriors,
    leading_components,
    msi_tissue_fraction,
    smooth_on_raster,
    st_points,
)
from .qc import feature_similarity, placement_check, tissue_dice, truth_error
from .register import (
    ANOTHER_MINIMUM_PITCHES,
    affine_uncertainty,
    register_auto,
    register_landmarks,
    scale_range,
)
from .transform import Transform

log = logging.getLogger(__name__)

#: how far (× the landmarks' median leave-one-out error) a refinement started from landmarks
#: may move them from their ST positions before the landmark fit is kept instead. Benchmark
#: (40 Visium-size cases, 8 landmarks with 10 µm placement error): correct refinements move them
#: 0.44–1.44 × that error, the ones that slid 116–164 µm off 2.3–4.2 × (the tolerance is at least
#: half a spot pitch; a whole pitch, the floor before, let a 116 µm slide on Visium HD bins pass)
LANDMARK_AGREEMENT = 2.0

#: a fitted scale within this factor of the edge of :func:`~.register.scale_range` counts as
#: held there by it (the affine fits stop at that edge instead of leaving the range)
SCALE_EDGE = 1.005

#: defaults of the ``align`` config section (the schema holds the same values and their meaning)
DEFAULTS = {
    "method": "auto", "rotation_step_deg": 4.0, "scales": [0.9, 0.95, 1.0, 1.05, 1.1],
    "allow_reflection": True, "refine_affine": True, "feature_components": 8,
    "feature_weight": 1.0, "nonrigid": True, "nonrigid_spacing_um": 400.0,
    "nonrigid_smoothness": 20.0, "nonrigid_validate": True, "nonrigid_validate_block": 2.0,
    "domain_clusters": 0,
    "domain_smoothing_um": 25.0, "landmark_model": "affine",
    "min_coverage": 0.5,
    "min_dice": 0.75, "min_similarity": 0.1, "min_placement_margin": 0.0,
    "min_similarity_margin": 0.0, "uncertainty_halves": 8,
}


def read_landmarks(path: str | Path, sample: str | None = None) -> pd.DataFrame:
    cols = ["st_x_um", "st_y_um", "msi_x_um", "msi_y_um"]
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"cannot read landmarks CSV ({exc})", sample, path) from None
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"landmarks CSV lacks columns {missing}", sample, path)
    if df[cols].isna().any().any():
        raise InputError("landmarks CSV has empty values", sample, path)
    if len(df) < 3:
        raise InputError(f"need at least 3 landmarks, found {len(df)}", sample, path)
    return df[cols].astype(float)


@dataclass
class AlignInputs:
    """Both sections in the form registration and QC use (see :mod:`.features`)."""

    pts: StPoints
    raster: MsiRaster
    capture_box: np.ndarray
    st_xy: np.ndarray
    native: np.ndarray
    on_tissue: np.ndarray
    pixel_um: np.ndarray  # (x, y) µm (:mod:`spatialfuse.pixels`)
    spot_um: float
    spot_shape: str
    #: domain channels for the fine fit (:class:`DomainChannels`), or None
    fine: "DomainChannels | None" = None


def tissue_signal(msi: ad.AnnData) -> np.ndarray | None:
    """Total ion count per pixel over the non-matrix peaks, from the raw intensities
    (``layers['intensity']``); None when the input has no raw intensities."""
    if Key.layers.intensity not in msi.layers:
        return None
    Xi = msi.layers[Key.layers.intensity]
    if Key.var.matrix_peak in msi.var:
        keep = ~msi.var[Key.var.matrix_peak].to_numpy(bool)
        if not keep.any():
            return None
        Xi = Xi[:, keep]
    return np.asarray(Xi.sum(1), dtype=float).ravel()


class DomainChannels:
    """Domain channels for the fine fit: a denoised signal both sections share.

    ST: k-means (``n_clusters``) on the spots' gene components, one-hot per spot (spot-level
    labels are nearly noise-free, and domain boundaries cross many spots sharply). MSI: for a
    given affine, each tissue pixel's posterior of those same domains from a linear
    discriminant on its (``smoothing_um``-smoothed) ion-image components, trained on the pixels
    that the affine puts inside a spot whose neighbours all share its domain (so boundary
    pixels, whose label depends on the registration's remaining error, do not train it). The
    discriminant is global (a few means and one covariance), so the MSI domain maps keep the
    MSI section's own geometry: a warp the affine leaves shows as displaced boundaries.
    ``inputs(A)`` gives the observation points (components + one-hot, two channel groups) and
    the MSI raster (components + posteriors).
    """

    def __init__(self, pts: StPoints, st_xy: np.ndarray, st_pcs: np.ndarray, native: np.ndarray,
                 on_tissue: np.ndarray, msi_pcs: np.ndarray, pixel_um, spot_um: float,
                 n_clusters: int, smoothing_um: float, seed: int, raster_args: dict, st_kw: dict):
        self.st_xy, self.native, self.on = st_xy, native, np.asarray(on_tissue, bool)
        self.msi_pcs, self.px, self.spot_um = msi_pcs, pixel_xy(pixel_um), float(spot_um)
        self.raster_args = raster_args
        self.labels = KMeans(n_clusters=int(n_clusters), n_init=4, random_state=seed).fit_predict(st_pcs)
        self.n_clusters = int(n_clusters)
        onehot = np.eye(self.n_clusters)[self.labels]
        # the domain channels alone: with the noisy components beside them (R² 0.2-0.3) the
        # B-spline fits their noise (benchmark: blob-3 24-26 µm instead of 23 µm)
        self.pts = st_points(st_xy, onehot, st_kw["box"], spot_um=spot_um,
                             spot_shape=st_kw["spot_shape"], array_rows=st_kw["rows"],
                             array_cols=st_kw["cols"], tissue_fraction=st_kw["tissue_fraction"])
        self.msi_smooth = smooth_on_raster(native, msi_pcs, self.on, pixel_um, smoothing_um)[self.on]
        tree = cKDTree(st_xy)
        nb = tree.query_ball_point(st_xy, 1.5 * pts.pitch_um)
        self.pure = np.array([bool(np.all(self.labels[j] == self.labels[i])) for i, j in enumerate(nb)])
        self.tree = tree

    def inputs(self, A: np.ndarray) -> tuple[StPoints, MsiRaster]:
        xy = self.native[self.on] @ A[:2, :2].T + A[:2, 2]
        d, i = self.tree.query(xy)
        train = (d <= self.spot_um / 2) & self.pure[i]
        P = lda_posteriors(self.msi_smooth[train], self.labels[i[train]], self.msi_smooth,
                           self.n_clusters)
        dom = np.zeros((len(self.on), self.n_clusters))
        dom[self.on] = P
        raster = MsiRaster(self.native, self.on, dom, self.px, **self.raster_args)
        return self.pts, raster


def prepare_inputs(st: ad.AnnData, msi: ad.AnnData, n_comps: int = DEFAULTS["feature_components"], seed: int = 0,
                   domain_clusters: int = DEFAULTS["domain_clusters"], domain_smoothing_um: float = DEFAULTS["domain_smoothing_um"]) -> AlignInputs:
    """Feature maps (leading PCs of each modality), ST observation points and the MSI raster;
    with ``domain_clusters`` ≥ 2 also the domain-channel inputs of the fine fit (``fine``)."""
    meta_st = st.uns.get(Key.uns.spatialfuse, {})
    meta_msi = msi.uns.get(Key.uns.spatialfuse, {})
    px = pixel_xy(meta_msi)
    spot_um = float(meta_st.get("spot_diameter_um", 55.0))
    spot_shape = meta_st.get("spot_shape", "disk")
    native = np.asarray(msi.obsm[Key.obsm.spatial], float)
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    st_xy = np.asarray(st.obsm[Key.obsm.spatial], float)
    box = meta_st.get("capture_box_um")
    pad = spot_um / 2
    capture_box = (np.asarray(box, float) if box is not None
                   else np.r_[st_xy.min(0) - pad, st_xy.max(0) + pad])
    Xs = st.X
    if Key.var.highly_variable in st.var and st.var[Key.var.highly_variable].sum() >= 10:
        Xs = st[:, st.var[Key.var.highly_variable].to_numpy(bool)].X
    st_pcs = leading_components(Xs, n_comps, seed=seed) if n_comps else np.zeros((st.n_obs, 0))
    on_idx = np.nonzero(on)[0]
    msi_pcs = (leading_components(msi.X, n_comps, on_idx, seed=seed) if n_comps and on_idx.size > 10
               else np.zeros((msi.n_obs, 0)))
    rows = st.obs[Key.obs.array_row].to_numpy() if Key.obs.array_row in st.obs else None
    cols = st.obs[Key.obs.array_col].to_numpy() if Key.obs.array_col in st.obs else None
    frac = (st.obs[Key.obs.tissue_fraction].to_numpy(float) if Key.obs.tissue_fraction in st.obs
            else None)
    pts = st_points(st_xy, st_pcs, capture_box, spot_um=spot_um, spot_shape=spot_shape,
                    array_rows=rows, array_cols=cols, tissue_fraction=frac)
    raster_args = {"tissue_fraction": msi_tissue_fraction(native, on, tissue_signal(msi), px)}
    raster = MsiRaster(native, on, msi_pcs, px, **raster_args)
    fine = None
    k = int(domain_clusters)
    if (k >= 2 and st_pcs.shape[1] and msi_pcs.shape[1] and on.sum() >= 10 * k
            and st.n_obs >= 10 * k):
        fine = DomainChannels(pts, st_xy, st_pcs, native, on, msi_pcs, px, spot_um, k,
                              float(domain_smoothing_um), seed, raster_args,
                              dict(box=capture_box, spot_shape=spot_shape, rows=rows, cols=cols,
                                   tissue_fraction=frac))
    return AlignInputs(pts, raster, capture_box, st_xy, native, on, px, spot_um, spot_shape, fine)


def register(inp: AlignInputs, params: dict, *, landmarks: pd.DataFrame | None = None,
             sample: str = "sample") -> tuple[Transform, dict]:
    """The transform by ``params['method']`` (auto / landmarks / identity) and its diagnostics."""
    p = {**DEFAULTS, **(params or {})}
    method = p["method"]
    diag: dict = {}
    lm_T = None
    if landmarks is not None and method in ("auto", "landmarks"):
        lm_T, lm_diag = register_landmarks(landmarks[["st_x_um", "st_y_um"]].to_numpy(),
                                           landmarks[["msi_x_um", "msi_y_um"]].to_numpy(),
                                           model=p["landmark_model"], box=inp.capture_box)
        diag.update(lm_diag)
    elif method == "landmarks":
        raise InputError("align.method is 'landmarks' but the samples sheet gives no landmarks "
                         "file for this sample", sample)
    if method == "identity":
        return Transform(np.eye(3), meta={"method": "identity"}), diag
    if method == "landmarks":
        return lm_T, diag
    try:
        T, adiag = register_auto(
            inp.pts, inp.raster, inp.capture_box,
            rotation_step_deg=float(p["rotation_step_deg"]), scales=tuple(p["scales"]),
            allow_reflection=bool(p["allow_reflection"]), feature_weight=float(p["feature_weight"]),
            refine_affine=bool(p["refine_affine"]), nonrigid=bool(p["nonrigid"]),
            nonrigid_spacing_um=float(p["nonrigid_spacing_um"]),
            nonrigid_smoothness=float(p["nonrigid_smoothness"]),
            nonrigid_validate=bool(p["nonrigid_validate"]),
            nonrigid_validate_block=float(p["nonrigid_validate_block"]),
            initial=None if lm_T is None else lm_T.affine,
            fine=inp.fine.inputs if inp.fine is not None and int(p["domain_clusters"]) >= 2 else None)
    except AlignmentError as exc:
        raise AlignmentError(f"sample '{sample}': {exc}") from None
    diag.update(adiag)
    if lm_T is not None:
        T.meta["initialised_from"] = "landmarks_affine"
        T = _keep_landmark_agreement(T, lm_T, landmarks, diag, inp.pts.tolerance_um, sample)
    return T, diag


def _keep_landmark_agreement(T: Transform, lm_T: Transform, landmarks: pd.DataFrame, diag: dict,
                             tolerance_um: float, sample: str) -> Transform:
    """The landmark fit instead of its image-based refinement when the refinement moved the
    landmarks further from their ST positions than the landmarks' own leave-one-out error
    allows (:data:`LANDMARK_AGREEMENT` × its median, at least half of ``tolerance_um``, one
    spot pitch, at least 100 µm for Visium HD bins): the landmarks are the user's evidence, and
    a refinement that contradicts them slid into another minimum (seen on partial overlap).

    Also when the image data do not settle the placement themselves: their two affine fits
    (led by the feature maps; balanced) ended more than half a pitch apart
    (:func:`alternative_fit_warning`). The landmarks then decide, even where the refinement
    stayed within their tolerance (benchmark, a cut 3 mm section: the refinement from landmarks
    slid to 64 µm off, 63 µm from the landmarks against a tolerance of 83 µm, where the
    landmark fit is 22 µm off)."""
    src = landmarks[["msi_x_um", "msi_y_um"]].to_numpy(float)
    dst = landmarks[["st_x_um", "st_y_um"]].to_numpy(float)
    err = float(np.median(np.linalg.norm(T(src) - dst, axis=1)))
    loo = diag.get("landmark_loo_error_um_median")
    floor = 0.5 * tolerance_um
    tol = max(LANDMARK_AGREEMENT * float(loo), floor) if loo is not None else tolerance_um
    settled = alternative_fit_warning(diag, tolerance_um) is None
    ok = err <= tol and settled
    diag["landmark_refinement"] = {"median_landmark_error_um": err, "tolerance_um": tol,
                                   "image_fits_agree": settled, "accepted": ok}
    if ok:
        return T
    why = (f"moved the landmarks {err:.0f} um from their ST positions (tolerance {tol:.0f} um)"
           if err > tol else "is not settled by the images (their two affine fits disagree by "
           "more than half a spot pitch)")
    log.warning("sample '%s': the image-based refinement %s: kept the fit through the landmarks (%s)",
                sample, why, lm_T.meta.get("method", "landmark"))
    lm_T.meta["refinement_rejected"] = True
    return lm_T


def run_align(
    st: ad.AnnData,
    msi: ad.AnnData,
    params: dict,
    *,
    sample: str = "sample",
    landmarks: pd.DataFrame | None = None,
    truth_dir: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Register, resolution-match and QC one sample.

    ``st``: ingested ST (spots, µm); ``msi``: ingested MSI (pixels, own frame µm, with
    ``obs['on_tissue']``). Returns ``transform``, ``msi_aligned`` (all pixels; ``obsm['spatial']``
    in the ST frame, ``obsm['spatial_native']`` kept), ``rna`` and ``msi_spots`` (paired on the
    spots with enough MSI coverage), ``coverage`` (every spot) and ``qc``.
    """
    p = {**DEFAULTS, **(params or {})}
    inp = prepare_inputs(st, msi, int(p["feature_components"]), seed, int(p["domain_clusters"]),
                         float(p["domain_smoothing_um"]))
    px, spot_um, spot_shape = inp.pixel_um, inp.spot_um, inp.spot_shape
    qc: dict = {"sample": sample, "msi_pixel_size_um": pixel_side(px),
                "msi_pixel_size_xy_um": [float(v) for v in px], "spot_diameter_um": spot_um}
    T, diag = register(inp, p, landmarks=landmarks, sample=sample)
    qc["method"] = T.meta.get("method")
    qc.update({k: v for k, v in diag.items() if k != "refine"})
    if "refine" in diag:
        qc["refine_levels"] = diag["refine"]["levels"]
    qc["transform"] = T.decompose()
    native, on, st_xy = inp.native, inp.on_tissue, inp.st_xy

    # aligned MSI: every pixel in the ST frame
    aligned = msi.copy()
    aligned.obsm[Key.obsm.spatial_native] = native
    aligned.obsm[Key.obsm.spatial] = T(native)
    if T.is_nonrigid:
        sample_px = native[on][:: max(1, int(on.sum()) // 2000)]
        qc["inverse_consistency_um"] = T.inverse_consistency_um(sample_px)

    # resolution matching: exact area weights
    W = overlap_weights(st_xy, spot_um, native, px, T, spot_shape=spot_shape)
    spot_area = np.pi * (spot_um / 2) ** 2 if spot_shape == "disk" else spot_um**2
    lin = msi.X.copy()
    lin = lin.expm1() if sp.issparse(lin) else np.expm1(lin)
    V, coverage, n_pix = aggregate(W, lin, spot_area)
    # overlap and feature-similarity QC
    qc.update(assess_registration(inp, T, p, coverage=coverage))
    if str(qc["method"]).startswith("auto"):  # how well the data determine the automatic fit
        doubts = [alternative_fit_warning(diag, inp.pts.tolerance_um)]
        if int(p["uncertainty_halves"]) > 0 and diag.get("levels_um"):
            unc = registration_uncertainty(inp, T, diag, p, seed)
            qc["affine_uncertainty"] = unc
            qc["affine_uncertainty_um"] = unc.get("affine_uncertainty_um")
            doubts.insert(0, uncertainty_warning(qc["affine_uncertainty_um"], inp.pts.tolerance_um))
        qc["warnings"] += [w for w in doubts if w]
        qc["flagged"] = bool(qc["warnings"])
    R, _, _ = aggregate(W, msi.layers[Key.layers.intensity], spot_area)
    min_cov = float(p["min_coverage"])
    covered = coverage >= min_cov
    qc.update(spots=int(st.n_obs), spots_covered=int(covered.sum()),
              spots_low_coverage=int((~covered).sum()),
              median_coverage=float(np.median(coverage)),
              median_pixels_per_spot=float(np.median(n_pix)))
    if covered.sum() == 0:
        raise AlignmentError(f"sample '{sample}': after registration no ST spot is covered by MSI "
                             f"pixels (min_coverage={min_cov}); the sections do not overlap")
    msi_spots = ad.AnnData(
        X=sp.csr_matrix(np.log1p(V[covered])),
        obs=pd.DataFrame(index=st.obs_names[covered]),
        var=msi.var.copy(),
    )
    msi_spots.layers[Key.layers.intensity] = sp.csr_matrix(R[covered])
    msi_spots.obs[Key.obs.coverage] = coverage[covered]
    msi_spots.obs[Key.obs.n_pixels] = n_pix[covered]
    msi_spots.obsm[Key.obsm.spatial] = st_xy[covered]
    msi_spots.uns[Key.uns.spatialfuse] = dict(msi.uns.get(Key.uns.spatialfuse, {}),
                                              aggregated_to="st_spots", weights="exact_area")
    rna = st[covered].copy()
    rna.obs[Key.obs.coverage] = coverage[covered]
    st_obs_cov = pd.DataFrame({Key.obs.coverage: coverage, Key.obs.n_pixels: n_pix,
                               Key.obs.low_coverage: ~covered}, index=st.obs_names)

    if truth_dir is not None:
        te = truth_error(T, truth_dir, msi.obs, px, capture_box=inp.capture_box)
        if te:
            qc.update(te)
    if landmarks is not None:
        d = np.linalg.norm(T(landmarks[["msi_x_um", "msi_y_um"]].to_numpy())
                           - landmarks[["st_x_um", "st_y_um"]].to_numpy(), axis=1)
        qc["landmark_error_um_mean"] = float(d.mean())
        qc["landmark_error_um_median"] = float(np.median(d))

    out_frac = qc["msi_tissue_outside_capture"]
    if out_frac >= OUTSIDE_CAPTURE_NOTE:
        log.info("%s: %.0f%% of the MSI tissue lies outside the ST capture area; its placement there "
                 "is extrapolated by the transform (no spots to check it by)", sample, 100 * out_frac)
    for w in qc["warnings"]:
        log.warning("REGISTRATION FLAGGED (%s): %s", sample, w)
    return {"transform": T, "msi_aligned": aligned, "rna": rna, "msi_spots": msi_spots,
            "coverage": st_obs_cov, "qc": qc}


def registration_uncertainty(inp: AlignInputs, T: Transform, diag: dict, params: dict,
                             seed: int = 0) -> dict:
    """:func:`~.register.affine_uncertainty` of an automatic registration ``T``, refitted as its
    final affine fit was (finest level, balanced if that fit was, held within the searched
    scales); ``diag`` is :func:`register`'s."""
    p = {**DEFAULTS, **(params or {})}
    return affine_uncertainty(inp.pts, inp.raster, T.affine, float(diag["levels_um"][-1]),
                              halves=int(p["uncertainty_halves"]), seed=seed,
                              feature_weight=float(p["feature_weight"]),
                              balance=bool(diag.get("balanced_fit", {}).get("accepted", False)),
                              scale_bounds=scale_range(p["scales"]))


#: share of the MSI tissue outside the ST capture area from which the log says so
OUTSIDE_CAPTURE_NOTE = 0.05


def outside_capture_fraction(inp: AlignInputs, T: Transform) -> float:
    """Fraction of the on-tissue MSI pixels that ``T`` places outside the ST capture area.

    There the registration has no spots to go by: their positions are the transform's
    extrapolation, and an error of the affine's linear part (scale, shear, rotation) grows
    with the distance from the capture area (benchmark, the 7 partial-overlap cases of 60
    with >= 5 % of the tissue beyond the capture edge: the automatic fit's median error
    outside was 1.3-2.5 x that inside, ``benchmarks/RESULTS.md``). Those pixels are in
    ``msi_aligned.h5ad`` but are paired with no spot."""
    xy = inp.native[inp.on_tissue]
    if not len(xy):
        return 0.0
    return float(1.0 - in_box(T(xy), inp.capture_box).mean())


def assess_registration(inp: AlignInputs, T: Transform, params: dict,
                        coverage: np.ndarray | None = None) -> dict:
    """Tissue Dice, feature similarity with its null, covered fraction of the spots, and the
    plain-language warnings (``warnings``, ``flagged``) for the transform ``T``.

    ``coverage``: per-spot covered fraction when already computed (else from the exact
    overlap weights)."""
    p = {**DEFAULTS, **(params or {})}
    if coverage is None:
        W = overlap_weights(inp.st_xy, inp.spot_um, inp.native, inp.pixel_um, T,
                            spot_shape=inp.spot_shape)
        area = np.pi * (inp.spot_um / 2) ** 2 if inp.spot_shape == "disk" else inp.spot_um**2
        coverage = np.clip(np.asarray(W.sum(1)).ravel() / area, 0, None)
    res = max(pixel_side(inp.pixel_um), 20.0)
    out = {"tissue_dice": tissue_dice(inp.pts, inp.raster, T, inp.capture_box, res)}
    out.update(feature_similarity(inp.pts, inp.raster, T))
    out.update(placement_check(inp.pts, inp.raster, T, inp.capture_box, res))
    out["covered_fraction"] = float((coverage >= float(p["min_coverage"])).mean())
    out["msi_tissue_outside_capture"] = outside_capture_fraction(inp, T)
    out["transform"] = T.decompose()
    out["warnings"] = registration_warnings(out, p, out["covered_fraction"])
    out["flagged"] = bool(out["warnings"])
    return out


#: a registration is flagged when this many times its uncertainty estimate exceeds one spot
#: pitch: the estimate is a standard error (:func:`~.register.affine_uncertainty`), and on the
#: benchmark's correct registrations the affine's true distance from the truth's best affine
#: reached 1.76 × the estimate (within × 2 in 18 of 20 cases), so an error of about twice the
#: estimate is still in reach
UNCERTAINTY_FLAG_SE = 2.0


def uncertainty_warning(uncertainty_um: float | None, tolerance_um: float) -> str | None:
    """A warning when :data:`UNCERTAINTY_FLAG_SE` × the affine's spread between halves of the
    section (:func:`~.register.affine_uncertainty`, a standard error) exceeds ``tolerance_um``
    (one spot pitch, at least 100 µm on Visium HD: :attr:`~.features.StPoints.tolerance_um`):
    the data do not rule out an error of a whole spot. (On the benchmark's 20 correct Visium
    registrations the spread is 5.8–35 µm against a 100 µm pitch; a pooled Visium HD section
    that slid 129 µm had 61 µm: ``benchmarks/RESULTS.md``.)"""
    if uncertainty_um is None or UNCERTAINTY_FLAG_SE * uncertainty_um <= tolerance_um:
        return None
    return (f"the registration is poorly determined: refitted on halves of the section, the "
            f"affine moves the MSI tissue by {uncertainty_um:.0f} um (RMS, a standard error); "
            f"an error of {UNCERTAINTY_FLAG_SE:g} x that, {UNCERTAINTY_FLAG_SE * uncertainty_um:.0f} um, "
            f"would exceed {tolerance_um:.0f} um (one spot pitch; at least 100 um for Visium HD "
            f"bins): check the overlay, or give landmarks")


#: two minima whose objectives (per point, full resolution) differ by less than this fraction
#: fit the data about equally well: on the benchmark the similarity restarts that found another
#: minimum found it 0.04–2.0 % below the first fit's (partial-4 in four of the five pixel/bin
#: geometries measured; in the fifth, y step 2× x, it found none; ``benchmarks/RESULTS.md``)
ALTERNATIVE_TIE = 0.05


def restart_objective_ratio(diag: dict) -> float | None:
    """The objective of the affine refitted from the best similarity over the first fit's
    (``diag['similarity_restart']``; None when the restart did not run)."""
    s = diag.get("similarity_restart") or {}
    return float(s["objective_restart"]) / float(s["objective_affine"]) \
        if s.get("objective_affine") else None


def alternative_fit_warning(diag: dict, tolerance_um: float) -> str | None:
    """A warning when the automatic registration's own alternative affine fits (same data) end
    more than half a spot pitch from the kept one (:data:`~.register.ANOTHER_MINIMUM_PITCHES`
    × ``tolerance_um``): the refit with each term weighted by its residual variance (rejected
    for moving that far, the first fit kept), or the refit from the best similarity at an
    objective within :data:`ALTERNATIVE_TIE` of the kept fit's (taken or not). Either way the
    data hold two placements that far apart, and which is right is not settled by the data.
    (Benchmark, 3 mm sections: a cut section of 205 spots kept a fit 64 µm off whose balanced
    refit moved 91 µm; on the 20 Visium-size cases in four pixel/bin geometries the balanced
    refits moved at most 43 µm, and the restart ended more than half a pitch away only on
    partial-4, the case whose data hold two minima: ``benchmarks/RESULTS.md``.)"""
    limit = ANOTHER_MINIMUM_PITCHES * tolerance_um
    b, s = diag.get("balanced_fit") or {}, diag.get("similarity_restart") or {}
    if b and not b.get("accepted", True):
        return (f"the registration is poorly determined: refitted with the tissue outline and the "
                f"feature maps each weighted by their residual variance, the affine moved the MSI "
                f"tissue {b['moved_um']:.0f} um (RMS) from the fit led by the feature maps, more "
                f"than half a spot pitch ({limit:.0f} um): the data hold two placements that far "
                f"apart; check the overlay, or give landmarks")
    ratio = restart_objective_ratio(diag)
    if ratio is not None and s.get("moved_um", 0.0) > limit and abs(ratio - 1.0) < ALTERNATIVE_TIE:
        return (f"the registration is poorly determined: refitted from the best similarity "
                f"(rotation, one scale, shift), the affine ends {s['moved_um']:.0f} um (RMS) "
                f"from the other fit, more than half a spot pitch ({limit:.0f} um), with an "
                f"objective within {abs(ratio - 1.0):.1%} of it: the data hold two placements "
                f"that far apart; check the overlay, or give landmarks")
    return None


def registration_warnings(qc: dict, p: dict, covered_fraction: float) -> list[str]:
    """Plain-language reasons to distrust a registration (empty when it looks right)."""
    out = []
    min_dice, min_sim, min_cov = float(p["min_dice"]), float(p["min_similarity"]), float(p["min_coverage"])
    if qc["tissue_dice"] < min_dice:
        out.append(f"tissue overlap (Dice {qc['tissue_dice']:.2f}) is below align.min_dice={min_dice}: "
                   "the registration may be wrong")
    if covered_fraction < 0.5:
        out.append(f"only {covered_fraction:.0%} of ST spots have MSI coverage >= {min_cov}")
    sim = qc.get("feature_similarity")
    margin = float(p["min_placement_margin"])
    if sim is not None and sim < min_sim:
        out.append(f"the two modalities' feature maps agree poorly after registration "
                   f"(similarity {sim:.2f} < align.min_similarity={min_sim})")
    null = qc.get("feature_similarity_null")
    sim_margin = float(p["min_similarity_margin"])
    if sim is not None and null is not None and sim < null + sim_margin:
        out.append(f"the feature maps agree no better after registration (similarity {sim:.2f}) "
                   f"than after a deliberately wrong rotation/mirror ({null:.2f}; "
                   f"align.min_similarity_margin={sim_margin})")
    tf = qc.get("transform")
    if tf and p.get("scales"):
        lo, hi = scale_range(p["scales"])
        s = sorted((float(tf["scale_x"]), float(tf["scale_y"])))
        if s[0] < lo * SCALE_EDGE or s[1] > hi / SCALE_EDGE:
            out.append(f"the fitted scales ({s[1]:.2f} and {s[0]:.2f}) reach or leave align.scales "
                       f"widened by 10 % ({lo:.2f}-{hi:.2f}), the range the affine fits are held "
                       "in: the MSI section is larger or smaller than that (check "
                       "msi_pixel_size_um, both axes, and align.scales), or the registration has "
                       "stretched it onto the wrong place")
    pm = qc.get("placement_margin")
    if pm is not None and pm < margin:
        out.append(f"a deliberately wrong placement ({qc['best_wrong_placement']}) matches about "
                   f"as well as the registration (tissue Dice + feature similarity "
                   f"{qc['best_wrong_placement_score']:.2f} vs {qc['placement_score']:.2f}; "
                   f"align.min_placement_margin={margin})")
    return out
