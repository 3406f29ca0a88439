"""Registration of the MSI section onto the ST section (MSI µm → ST µm).

Automatic (:func:`register_auto`, no landmarks, no image): a coarse search over reflection ×
rotation (full 360°) × scale with FFT translation (:mod:`.coarse`), scored on tissue masks and
on the principal-component feature maps of both modalities; the best few candidates are
refined briefly and the best refined one is taken through the full coarse-to-fine affine
refinement (:mod:`.refine`), refitted at full resolution with mask and feature terms weighted by
their residual variances (kept within half a spot pitch of the first fit), refitted once more
from its nearest similarity (kept where that finds a lower minimum more than half a pitch
away: :func:`_similarity_restart`), then given a B-spline
deformation that is kept only when it passes a two-fold checkerboard cross-validation
(:func:`validate_nonrigid`). Every affine fit holds both scales within the searched ones widened
by 10 % (:func:`scale_range`). When landmarks are given they replace the coarse search as the
starting point. :func:`affine_uncertainty` says, without truth or landmarks, how far the data
pin the fitted affine down (its refits on random halves of the section).

Landmarks (:func:`register_landmarks`): least-squares affine or thin-plate spline from matched
points, with leave-one-out error in µm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from ..errors import AlignmentError
from .coarse import DEFAULT_SCALES, coarse_grid_um, coarse_search
from .features import MsiRaster, StPoints
from .refine import BSplineField, group_mean, heldout_residuals, objective_at, refine
from .transform import DisplacementGrid, ThinPlateSpline, Transform, fit_affine, from_inverse_field

log = logging.getLogger(__name__)

#: default checkerboard block of the cross-validation, in B-spline control spacings
NONRIGID_BLOCK_FACTOR = 2.0

#: how far (a factor either way) the affine fits may take a scale beyond the searched ones
SCALE_SLACK = 1.1


def scale_range(scales) -> tuple[float, float]:
    """The range every affine fit of :func:`register_auto` holds both scales (singular values)
    in: the searched scales widened by :data:`SCALE_SLACK`."""
    return min(scales) / SCALE_SLACK, max(scales) * SCALE_SLACK


def pyramid_um(pitch_um: float, coarse_res_um: float) -> tuple[float, ...]:
    """Blur levels (µm): from max(2 × coarse grid, 2 × pitch) down to half the pitch, then 0."""
    s = max(2 * coarse_res_um, 2 * pitch_um)
    out = []
    while s >= pitch_um / 2 - 1e-9:
        out.append(float(s))
        s /= 2
    return tuple(out) + (0.0,)


#: a refit that moves the MSI tissue further than this many spot pitches (RMS; the pitch as
#: :attr:`~.features.StPoints.tolerance_um`) has left the first fit's minimum: the balanced
#: refit is then not trusted, the restart from the best similarity counts as another minimum
ANOTHER_MINIMUM_PITCHES = 0.5


def rms_moved_um(msi_xy: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """RMS distance (µm, ST frame) between where two MSI → ST affines put the points
    ``msi_xy`` (MSI µm)."""
    D = np.asarray(B, float) - np.asarray(A, float)
    return float(np.sqrt(np.mean(np.sum((msi_xy @ D[:2, :2].T + D[:2, 2]) ** 2, 1))))


def transform_from_fit(A: np.ndarray, field: BSplineField | None, meta: dict) -> Transform:
    """A :class:`Transform` from a refined affine and (optionally) the fitted inverse field."""
    if field is None or not np.any(field.coef):
        return Transform(A, meta=meta)
    lo, hi = field.extent
    return from_inverse_field(A, field, lo, hi, field.spacing / 4, meta)


def register_auto(
    pts: StPoints,
    raster: MsiRaster,
    capture_box: np.ndarray,
    *,
    rotation_step_deg: float = 4.0,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    allow_reflection: bool = True,
    feature_weight: float = 1.0,
    final_feature_weight: float | None = None,
    refine_affine: bool = True,
    nonrigid: bool = True,
    nonrigid_spacing_um: float = 400.0,
    nonrigid_smoothness: float = 20.0,
    nonrigid_validate: bool = True,
    nonrigid_validate_block: float = NONRIGID_BLOCK_FACTOR,
    balance_features: bool = True,
    n_candidates: int = 3,
    initial: np.ndarray | None = None,
    fine: Callable[[np.ndarray], tuple[StPoints, MsiRaster]] | None = None,
) -> tuple[Transform, dict]:
    """Automatic registration (see the module docstring). ``initial``: an MSI → ST affine to
    start from instead of the coarse search (e.g. from landmarks). ``fine``: given the fitted
    affine, other observation points and MSI raster (domain channels,
    :class:`~.stage.DomainChannels`) for the non-rigid step and its cross-validation; the
    coarse search and the affine fits use ``pts``/``raster``."""
    t0 = time.perf_counter()
    if raster.tissue.sum() < 3 or pts.tissue.sum() < 3:
        raise AlignmentError("too few tissue spots/pixels to register")
    box = np.asarray(capture_box, float)
    # every affine fit keeps the section's scales within the searched ones (+ SCALE_SLACK), the
    # user's prior on its size, unless it starts outside them (a landmark start)
    bounds = scale_range(scales)
    diag: dict = {}
    if initial is None:
        cands, cdiag = coarse_search(pts, raster, box, rotation_step_deg=rotation_step_deg,
                                     scales=scales, allow_reflection=allow_reflection,
                                     feature_weight=feature_weight, n_best=max(1, n_candidates))
        diag.update(cdiag)
        if not cands or cands[0].mask_score <= 0:
            raise AlignmentError("the MSI tissue and the ST tissue do not overlap for any rotation, "
                                 "reflection, scale or shift tried")
        res = cdiag["grid_um"]
    else:
        res = coarse_grid_um(float(max(box[2] - box[0], box[3] - box[1])))
        diag["initial"] = "given"
    levels = pyramid_um(pts.pitch_um, res)
    diag["levels_um"] = list(levels)
    if not refine_affine:
        A = cands[0].affine if initial is None else np.asarray(initial, float)
        T = Transform(A, meta={"method": "auto_coarse"})
        diag["seconds"] = time.perf_counter() - t0
        return T, diag
    if initial is None and len(cands) > 1:
        # the best few coarse candidates, refined as affines down to the finest blurred level:
        # the lowest objective at full resolution wins (coarse levels reward any placement that
        # matches the blurred outline; fine detail tells the right one)
        scored = []
        for c in cands:
            A, _, d = refine(pts, raster, c.affine, levels_um=levels[:-1], feature_weight=feature_weight,
                             nonrigid=False, max_iter=10, scale_bounds=bounds)
            scored.append((objective_at(pts, raster, A, levels[-1], feature_weight)["E_per_point"], A, c))
        scored.sort(key=lambda s: s[0])
        diag["candidate_objectives"] = [round(float(s[0]), 5) for s in scored]
        diag["candidate_rotations_deg"] = [s[2].rotation_deg for s in scored]
        diag["candidate_reflect"] = [s[2].reflect for s in scored]
        if scored[0][2] is not cands[0]:
            log.info("a lower-ranked coarse candidate (rot %.0f deg, reflect %s) refined better",
                     scored[0][2].rotation_deg, scored[0][2].reflect)
        A0 = scored[0][1]
        diag["refine_margin"] = float(scored[1][0] - scored[0][0])
        levels_rest = levels[-2:]
    else:
        A0 = cands[0].affine if initial is None else np.asarray(initial, float)
        levels_rest = levels
    fw_final = feature_weight if final_feature_weight is None else final_feature_weight
    nr_kw = dict(nonrigid_from_um=max(2 * pts.pitch_um, levels[-2]), spacing_um=nonrigid_spacing_um,
                 smoothness=nonrigid_smoothness, box=box)
    # the affine on the objective as ranked (feature maps dominate it: robust, but their
    # spot-level noise leaves it ~10 µm off), then the same refitted with each term weighted by
    # its residual variance, which lets the tissue outline set the fine fit
    A, _, rdiag = refine(pts, raster, A0, levels_um=levels_rest, feature_weight=feature_weight,
                         nonrigid=False, scale_bounds=bounds)
    rkw = dict(feature_weight=feature_weight, balance=False, scale_bounds=bounds)
    if balance_features:
        Ab, _, bdiag = refine(pts, raster, A, levels_um=levels_rest[-1:], feature_weight=fw_final,
                              nonrigid=False, balance=True, scale_bounds=bounds)
        moved = rms_moved_um(raster.tissue_xy, A, Ab)
        trust = ANOTHER_MINIMUM_PITCHES * pts.tolerance_um
        diag["balanced_fit"] = {"moved_um": moved, "trust_um": trust, "accepted": moved <= trust}
        if moved <= trust:
            A, rdiag = Ab, bdiag
            rkw = dict(feature_weight=fw_final, balance=True, scale_bounds=bounds)
        else:  # a fine correction that moves this far follows another minimum of the outline
            log.info("balanced fit moved the tissue by %.0f um (> %.0f um): kept the first fit",
                     moved, trust)
    if initial is None:  # from landmarks, their agreement check (stage) rules on a slide
        A = _similarity_restart(pts, raster, A, levels_rest, feature_weight, rkw, diag)
    field = None
    # the non-rigid step on the domain channels (denoised shared signal) when given
    fpts, fraster = (pts, raster) if fine is None or not nonrigid else fine(A)
    if nonrigid and nonrigid_validate:
        check = validate_nonrigid(fpts, fraster, A, levels_rest, rkw, nr_kw, nonrigid_validate_block)
        diag["nonrigid_check"] = check
        if check["accepted"]:
            A, field, rdiag = refine(fpts, fraster, A, levels_um=levels_rest, nonrigid=True,
                                     **rkw, **nr_kw)
    elif nonrigid:
        A, field, rdiag = refine(fpts, fraster, A, levels_um=levels_rest, nonrigid=True,
                                 **rkw, **nr_kw)
    diag["refine"] = rdiag
    diag["feature_r2"] = rdiag["final_feature_r2"]
    T = transform_from_fit(A, field, {"method": "auto_nonrigid" if field is not None else "auto_affine"})
    diag["seconds"] = time.perf_counter() - t0
    log.info("automatic registration: %s in %.1fs (rotation %.1f deg, scale %.3f, reflect %s%s)",
             T.meta["method"], diag["seconds"], T.decompose()["rotation_deg"],
             T.decompose()["mean_scale"], T.decompose()["reflect"],
             f", non-rigid up to {T.displacement.max_abs_um():.0f} um" if T.displacement else "")
    return T, diag


def _similarity_restart(pts: StPoints, raster: MsiRaster, A: np.ndarray, levels_um: tuple[float, ...],
                        feature_weight: float, refine_kw: dict, diag: dict) -> np.ndarray:
    """The final affine fit once more, started from the best similarity (rotation, one scale,
    shift) instead of from the affine found. Where it ends in another minimum (more than half a
    spot pitch away) with a lower objective at full resolution (as the coarse candidates are
    ranked), that one is kept; a restart that returns to the same minimum changes nothing.

    An affine's anisotropy and shear can trade for a shift along a side of the tissue that the
    data do not outline (tissue cut at the capture edge, a cropped raster): the fit then ends in
    a minimum of the blurred levels a pitch or more from the right one (benchmark partial-4 at
    y step ½ x: 133 µm off, 11 % anisotropy, where the truth has none). A similarity cannot
    slide that way; the affine refitted from it at the finest level finds the other minimum
    when there is one.

    Not used on a start from landmarks: there the refinement is checked against the landmarks
    (:func:`~.stage.register`), and a restart's other minimum can pass that check further from
    the truth than the landmark fit (benchmark partial-4, square pixels: 49 µm against the
    landmark fit's 26 µm)."""
    S, _, _ = refine(pts, raster, A, levels_um=levels_um, feature_weight=feature_weight,
                     nonrigid=False, similarity=True, scale_bounds=refine_kw.get("scale_bounds"))
    As, _, _ = refine(pts, raster, S, levels_um=levels_um[-1:], nonrigid=False, **refine_kw)
    e_a = objective_at(pts, raster, A, levels_um[-1], feature_weight)["E_per_point"]
    e_s = objective_at(pts, raster, As, levels_um[-1], feature_weight)["E_per_point"]
    moved = rms_moved_um(raster.tissue_xy, A, As)
    keep = bool(e_s < e_a and moved > ANOTHER_MINIMUM_PITCHES * pts.tolerance_um)
    diag["similarity_restart"] = {"moved_um": moved, "objective_affine": float(e_a),
                                  "objective_restart": float(e_s), "accepted": keep}
    if keep:
        log.info("the affine refitted from the best similarity fits better (objective %.5f vs "
                 "%.5f) %.0f um from the first fit: kept it", e_s, e_a, moved)
    return As if keep else A


#: relative decrease of the held-out objective (each fold) the B-spline must bring to be kept:
#: gains below ~1 % are within the noise of the spot-level feature maps (benchmark: a warp-free
#: case passed with 0.4 % / 0.2 % and was made worse, a 37 µm warp gained 1.8 % / 1.6 % and the
#: error fell from 29 to 23 µm)
NONRIGID_MIN_GAIN = 0.01


def checkerboard_folds(xy: np.ndarray, block_um: float) -> np.ndarray:
    """Fold (0/1) of each point: a checkerboard of ``block_um`` squares."""
    b = np.floor(np.asarray(xy, float) / block_um).astype(np.int64)
    return ((b[:, 0] + b[:, 1]) % 2).astype(int)


def subset_points(pts: StPoints, keep: np.ndarray) -> StPoints:
    return StPoints(pts.xy[keep], pts.tissue[keep], pts.features[keep], pts.has_features[keep],
                    pts.pitch_um, pts.footprint_sigma_um, pts.groups, pts.tol_um)


def heldout_weights(pts: StPoints, mask_resid: float, feat_resid: np.ndarray, feature_weight: float,
                    balance: bool) -> np.ndarray:
    """Weight of each feature channel's held-out residual, as in the fit: balanced, each group
    of channels by the mask residual over the group's mean residual (at the affine); else
    ``feature_weight / k``."""
    k = len(feat_resid)
    if not k:
        return np.zeros(0)
    if not balance:
        return np.full(k, feature_weight / k)
    groups = np.zeros(k, int) if pts.groups is None else np.asarray(pts.groups, int)[:k]
    gm = group_mean(feat_resid, groups)
    return feature_weight * mask_resid / np.maximum(gm, 1e-12)


def validate_nonrigid(pts: StPoints, raster: MsiRaster, A: np.ndarray, levels_um: tuple[float, ...],
                      refine_kw: dict, nr_kw: dict, block_factor: float = NONRIGID_BLOCK_FACTOR) -> dict:
    """Two-fold cross-validation of the non-rigid step on a checkerboard of the capture area.

    For each fold, affine and affine + B-spline are both refitted on the other fold's points
    (starting from ``A``) and scored on this fold's points at full resolution (mask residual
    plus feature residuals, weighted as in the fit). The deformation is accepted only when it
    predicts both held-out folds better than the affine by more than ``NONRIGID_MIN_GAIN``
    (relative): a warp that follows noise, or a bias of the data term, fails there.
    """
    block = float(block_factor) * float(nr_kw["spacing_um"])
    fold = checkerboard_folds(pts.xy, block)
    out = {"block_um": block, "heldout_affine": [], "heldout_nonrigid": []}
    fw = float(refine_kw["feature_weight"])
    for f in (0, 1):
        train, test = subset_points(pts, fold != f), subset_points(pts, fold == f)
        if train.tissue.sum() < 10 or test.tissue.sum() < 10:
            out.update(accepted=False, reason="too few tissue points in a fold")
            return out
        Aa, _, _ = refine(train, raster, A, levels_um=levels_um[-1:], nonrigid=False, **refine_kw)
        An, fn, _ = refine(train, raster, Aa, levels_um=levels_um, nonrigid=True,
                           **refine_kw, **nr_kw)
        ma, fa = heldout_residuals(test, raster, Aa, None, 0.0)
        mn, fnr = heldout_residuals(test, raster, An, fn, 0.0)
        wc = heldout_weights(pts, ma, fa, fw, bool(refine_kw.get("balance")))
        out["heldout_affine"].append(float(ma + wc @ fa))
        out["heldout_nonrigid"].append(float(mn + wc @ fnr))
    gain = [a - n for a, n in zip(out["heldout_affine"], out["heldout_nonrigid"])]
    out["relative_gain"] = [float(g / max(a, 1e-12)) for g, a in zip(gain, out["heldout_affine"])]
    out["accepted"] = bool(all(r > NONRIGID_MIN_GAIN for r in out["relative_gain"]))
    log.info("non-rigid step %s on held-out halves (objective change %s)",
             "accepted" if out["accepted"] else "rejected",
             ", ".join(f"{-g:+.1%}" for g in out["relative_gain"]))
    return out


#: side of the blocks the affine's uncertainty is resampled by, in spot pitches (400 µm on
#: Visium): wider than the reach of the level's blur, so the halves' residuals are nearly
#: independent
UNCERTAINTY_BLOCK_PITCHES = 4.0


def affine_uncertainty(pts: StPoints, raster: MsiRaster, A: np.ndarray, sigma_um: float, *,
                       halves: int = 8, seed: int = 0, feature_weight: float = 1.0,
                       balance: bool = True, scale_bounds: tuple[float, float] | None = None) -> dict:
    """How far the data pin the affine, in µm: the fit refitted on random halves of the section.

    The ST points are cut into squares of :data:`UNCERTAINTY_BLOCK_PITCHES` spot pitches; each
    of ``halves`` refits keeps a random half of the squares and refits the affine from ``A`` at
    the finest level (``sigma_um``), as the final affine fit does (``balance``,
    ``feature_weight``, ``scale_bounds``: :func:`scale_range`). The reference is the same
    one-level refit on every point (after a B-spline, the affine alone; the spread is that
    affine's). A half-sample estimate scatters about the whole-data one with the whole-data
    estimate's own variance (n/m − 1 = 1 for m = n/2), so the RMS over refits of the RMS
    displacement of the MSI tissue pixels between a half's affine and the reference estimates
    the affine's standard error.

    It says how well the data determine the affine, not how far the truth is: a smooth warp the
    affine cannot follow adds to the error and not to this spread (benchmark, 20 simulated
    Visium-size cases: rank correlation 0.71 with the found affine's distance from the truth's
    best affine, that distance 0.47–1.76 × the estimate; ``benchmarks/RESULTS.md``).
    """
    block = UNCERTAINTY_BLOCK_PITCHES * pts.tolerance_um
    cell = np.floor(pts.xy / block).astype(np.int64)
    _, lab = np.unique(cell, axis=0, return_inverse=True)
    lab = np.asarray(lab).ravel()
    n_blocks = int(lab.max()) + 1
    out = {"block_um": block, "halves": int(halves), "blocks": n_blocks}
    tis = raster.tissue_xy
    kw = dict(levels_um=(float(sigma_um),), feature_weight=feature_weight, nonrigid=False,
              balance=balance, scale_bounds=scale_bounds)
    if n_blocks < 4:
        out.update(affine_uncertainty_um=None, reason="too few blocks to resample")
        return out
    ref, _, _ = refine(pts, raster, A, **kw)
    rng = np.random.default_rng(seed)
    moved = []
    for _ in range(int(halves)):
        keep = np.isin(lab, rng.permutation(n_blocks)[: n_blocks // 2])
        sub = subset_points(pts, keep)
        if sub.tissue.sum() < 10:
            out.update(affine_uncertainty_um=None, reason="too few tissue points in a half")
            return out
        Ah, _, _ = refine(sub, raster, ref, **kw)
        moved.append(rms_moved_um(tis, ref, Ah))
    out["half_moved_um"] = moved
    out["affine_uncertainty_um"] = float(np.sqrt(np.mean(np.square(moved))))
    return out


def _landmark_model(msi_pts, st_pts, model: str):
    if model == "tps":
        return ThinPlateSpline(msi_pts, st_pts)
    A = fit_affine(msi_pts, st_pts)
    return lambda p: p @ A[:2, :2].T + A[:2, 2]


def register_landmarks(st_pts: np.ndarray, msi_pts: np.ndarray, *, model: str = "affine",
                       box: np.ndarray | None = None) -> tuple[Transform, dict]:
    """Affine or thin-plate-spline transform from matched landmarks (MSI µm → ST µm), with the
    leave-one-out error (each landmark predicted by the fit to the others) in µm.

    ``box``: the ST region (xmin, ymin, xmax, ymax) over which a TPS displacement is tabulated.
    """
    st_pts, msi_pts = np.asarray(st_pts, float), np.asarray(msi_pts, float)
    n = len(st_pts)
    if n < 3:
        raise AlignmentError(f"need at least 3 landmarks, got {n}")
    if model == "tps" and n < 4:
        raise AlignmentError(f"a thin-plate spline needs at least 4 landmarks, got {n}")
    f = _landmark_model(msi_pts, st_pts, model)
    resid = np.linalg.norm(f(msi_pts) - st_pts, axis=1)
    loo = []
    if n >= 4 + (model == "tps"):
        for i in range(n):
            keep = np.arange(n) != i
            fi = _landmark_model(msi_pts[keep], st_pts[keep], model)
            loo.append(float(np.linalg.norm(fi(msi_pts[i:i + 1])[0] - st_pts[i])))
    if model == "tps":
        A = f.affine
        Ainv = np.linalg.inv(A)
        lo = st_pts.min(0) if box is None else np.asarray(box[:2])
        hi = st_pts.max(0) if box is None else np.asarray(box[2:])
        span = float(max(hi - lo))
        grid = DisplacementGrid.from_function(
            lambda y: f.nonlinear(y @ Ainv[:2, :2].T + Ainv[:2, 2]), lo - 0.1 * span, hi + 0.1 * span,
            max(span / 100, 10.0))
        T = Transform(A, grid, {"method": "landmarks_tps"})
    else:
        T = Transform(fit_affine(msi_pts, st_pts), meta={"method": "landmarks_affine"})
    diag = {
        "landmark_model": model,
        "n_landmarks": int(n),
        "landmark_residual_um_mean": float(resid.mean()),
        "landmark_loo_error_um_median": float(np.median(loo)) if loo else None,
        "landmark_loo_error_um_mean": float(np.mean(loo)) if loo else None,
        "landmark_loo_error_um_max": float(np.max(loo)) if loo else None,
    }
    return T, diag
