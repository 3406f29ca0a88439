"""Registration QC in micrometres: error against known truth, tissue overlap, feature similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..pixels import pixel_side, pixel_xy
from .coarse import canonical_correlations
from .features import MsiRaster, StPoints, in_box
from .transform import Transform, similarity_matrix


def truth_error(transform: Transform, truth_dir: str | Path, msi_obs: pd.DataFrame,
                pixel_size_um, min_tissue_fraction: float = 0.5,
                capture_box: np.ndarray | None = None) -> dict | None:
    """Target registration error against a simulator/benchmark truth folder.

    ``truth_dir/msi_pixels.tsv.gz`` gives, per imzML pixel (x, y), its true ST position; the
    error of a pixel is |T(pixel) − truth| in µm, over pixels that are mostly tissue (with
    ``capture_box``, also over those whose true position lies in the capture area:
    :func:`truth_error_table`).
    """
    f = Path(truth_dir) / "msi_pixels.tsv.gz"
    if not f.exists():
        return None
    return truth_error_table(transform, pd.read_csv(f, sep="\t"), msi_obs, pixel_size_um,
                             min_tissue_fraction, capture_box)


def truth_error_table(transform: Transform, truth: pd.DataFrame, msi_obs: pd.DataFrame,
                      pixel_size_um, min_tissue_fraction: float = 0.5,
                      capture_box: np.ndarray | None = None) -> dict:
    """:func:`truth_error` on an in-memory truth table (x, y, st_x_um, st_y_um, tissue_fraction);
    ``pixel_size_um``: one number or the (x, y) pair.

    ``capture_box`` (ST µm): the same summary (keys suffixed ``_in_capture``) over the pixels
    whose true position lies in the capture area, where the registration has ST data to go by
    and where MSI pixels are paired with spots, and the fraction of pixels outside it
    (``truth_outside_capture_fraction``), whose positions the transform extrapolates (tissue
    cut at the capture edge)."""
    t = truth[truth["tissue_fraction"] >= min_tissue_fraction]
    key = pd.MultiIndex.from_arrays([msi_obs["x"].to_numpy(), msi_obs["y"].to_numpy()])
    tk = pd.MultiIndex.from_arrays([t["x"].to_numpy(), t["y"].to_numpy()])
    t = t[tk.isin(key)]
    native = t[["x", "y"]].to_numpy(float) * pixel_xy(pixel_size_um)
    true_st = t[["st_x_um", "st_y_um"]].to_numpy()
    err = np.linalg.norm(transform(native) - true_st, axis=1)
    out = error_summary(err, pixel_size_um)
    if capture_box is not None and len(err):
        inside = in_box(true_st, capture_box)
        out["truth_outside_capture_fraction"] = float(1.0 - inside.mean())
        if inside.any():
            out.update({f"{k}_in_capture": v
                        for k, v in error_summary(err[inside], pixel_size_um).items()})
    return out


def error_summary(err: np.ndarray, pixel_size_um) -> dict:
    """Median, 90th percentile and mean of per-pixel registration errors (µm), the median in
    MSI pixels (for rectangular pixels: in sides of the square of the same area), and the
    number of pixels."""
    return {
        "truth_error_um_median": float(np.median(err)),
        "truth_error_um_p90": float(np.percentile(err, 90)),
        "truth_error_um_mean": float(err.mean()),
        "truth_error_pixels_median": float(np.median(err) / pixel_side(pixel_size_um)),
        "truth_n_pixels": int(len(err)),
    }


def tissue_dice(pts: StPoints, raster: MsiRaster, transform: Transform, capture_box: np.ndarray,
                res_um: float) -> float:
    """Dice overlap of the two tissue masks on a grid over the capture area (ST frame), counted
    where the MSI raster was acquired.

    ST tissue: grid nodes whose nearest observation point (spot or empty array position) is a
    tissue spot; MSI tissue: the MSI tissue fraction read at the node's pulled-back position.
    """
    box = np.asarray(capture_box, float)
    gx = np.arange(box[0] + res_um / 2, box[2], res_um)
    gy = np.arange(box[1] + res_um / 2, box[3], res_um)
    X, Y = np.meshgrid(gx, gy)
    nodes = np.stack([X.ravel(), Y.ravel()], 1)
    d, j = cKDTree(pts.xy).query(nodes)
    st = (d <= pts.pitch_um) & (pts.tissue[j] > 0.5)
    lev = raster.level(0.0)
    u = transform.inverse(nodes)
    idx = lev.index(u)
    msi = ndimage.map_coordinates(lev.mask, idx, order=1, mode="constant", cval=0.0) > 0.5
    imaged = ndimage.map_coordinates(lev.valid, idx, order=1, mode="constant", cval=0.0) > 0.5
    if imaged.any():  # only where both sections were imaged (partial overlap is not a mismatch)
        st, msi = st & imaged, msi & imaged
    s = st.sum() + msi.sum()
    return float(2 * (st & msi).sum() / s) if s else 0.0


#: principal components per modality that the feature-similarity QC compares
QC_COMPONENTS = 4


def feature_similarity(pts: StPoints, raster: MsiRaster, transform: Transform,
                       with_null: bool = True) -> dict:
    """How alike the two modalities look after registration, with a calibration.

    The canonical correlations between the ST principal components at the tissue spots and the
    MSI principal components read (blurred to the spot size) at the spots' positions in the MSI
    frame; the score is their mean over min(k_st, k_msi) pairs. The same score for deliberately
    wrong registrations (the fitted one composed with a 90°/180°/270° rotation or a mirror about
    the tissue centre) is the chance level ``feature_similarity_null`` (the best of those), so
    ``feature_similarity - feature_similarity_null`` tells a real match from spatial smoothness.
    """
    fi = np.nonzero(pts.has_features)[0]
    # at most the leading QC_COMPONENTS of each side, whatever the registration used: the
    # score (and align.min_similarity) keeps one calibration, and canonical correlations of
    # many components on a few hundred spots would mostly measure chance
    k_st, k_msi = min(pts.features.shape[1], QC_COMPONENTS), min(raster.k, QC_COMPONENTS)
    out = {"feature_similarity": None, "feature_similarity_null": None}
    if not (k_st and k_msi and len(fi) > 3 * (k_st + k_msi)):
        return out
    scale = float(np.sqrt(abs(np.linalg.det(transform.linear))))
    lev = raster.level(pts.footprint_sigma_um / scale)
    xy = pts.xy[fi]
    Y = pts.features[fi][:, :k_st]
    kk = min(k_st, k_msi)

    def score(points_st):
        u = transform.inverse(points_st)
        vals, valid, _ = lev.sample(u, with_grad=False)
        ok = (valid > 0.5) & (vals[:, 0] > 0.5)
        if ok.sum() < 3 * (k_st + k_msi):
            return 0.0, float(ok.mean())
        rho = canonical_correlations(Y[ok], vals[ok, 1:1 + k_msi] / vals[ok, :1])
        return float(rho[:kk].mean()), float(ok.mean())

    s, frac = score(xy)
    if not with_null:
        out.update(feature_similarity=s, spots_with_msi_tissue=frac)
        return out
    c = xy.mean(0)
    nulls = []
    for rot, refl in ((90, False), (180, False), (270, False), (0, True)):
        R = similarity_matrix(rot, 1.0, refl, np.zeros(2))[:2, :2]
        nulls.append(score((xy - c) @ R.T + c)[0])
    out.update(feature_similarity=s, feature_similarity_null=float(max(nulls)),
               spots_with_msi_tissue=frac)
    return out


def wrong_placements(transform: Transform, centre_st: np.ndarray,
                     shift_um: float) -> dict[str, Transform]:
    """Deliberately wrong placements of the MSI section: the fitted affine composed with a rotation
    by 90/180/270° or a mirror about ``centre_st`` (ST frame), or a shift by ``shift_um`` along
    ±x / ±y."""
    c = np.asarray(centre_st, float)
    out = {}
    s = float(shift_um)
    moves = [(f"rotate {r}", r, False, (0.0, 0.0)) for r in (90, 180, 270)]
    moves += [("mirror", 0, True, (0.0, 0.0))]
    moves += [(f"shift {n}", 0, False, d)
              for n, d in (("+x", (s, 0.0)), ("-x", (-s, 0.0)), ("+y", (0.0, s)), ("-y", (0.0, -s)))]
    for name, rot, refl, d in moves:
        R = similarity_matrix(rot, 1.0, refl, np.zeros(2))
        R[:2, 2] = c - R[:2, :2] @ c + np.asarray(d)
        out[name] = Transform(R @ transform.affine, meta={"method": name})
    return out


def placement_check(pts: StPoints, raster: MsiRaster, transform: Transform, capture_box: np.ndarray,
                    res_um: float) -> dict:
    """Does the found placement beat deliberately wrong ones (:func:`wrong_placements`, shifts of
    twice :attr:`~.features.StPoints.tolerance_um`: two spot pitches, at least 200 µm on Visium
    HD)? Score of a
    placement: tissue Dice + feature similarity. Returns the found score, the best wrong one (its name and score) and ``placement_margin`` (found − best wrong):
    a correct registration wins by the overlap lost in a 200 µm shift or a rotation, a gross
    failure (a wrong rotation/mirror, a slide along a cut edge) does not."""
    def score(T):
        fs = feature_similarity(pts, raster, T, with_null=False)["feature_similarity"]
        return tissue_dice(pts, raster, T, capture_box, res_um) + (fs or 0.0)

    c = transform(raster.tissue_xy).mean(0)
    s0 = score(transform)
    alt = {k: score(T) for k, T in wrong_placements(transform, c, 2.0 * pts.tolerance_um).items()}
    worst = max(alt, key=alt.get)
    return {"placement_score": float(s0), "best_wrong_placement": worst,
            "best_wrong_placement_score": float(alt[worst]),
            "placement_margin": float(s0 - alt[worst])}
