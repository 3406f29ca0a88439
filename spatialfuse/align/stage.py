"""The align stage as one function: transform, aligned MSI, paired spots, QC."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from ..errors import AlignmentError, InputError
from .aggregate import aggregate, overlap_weights
from .qc import truth_error
from .register import Grid, _mask_image, box_mask, dice, register_landmarks, register_masks
from .transform import Transform

log = logging.getLogger(__name__)


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


def run_align(
    st: ad.AnnData,
    msi: ad.AnnData,
    params: dict,
    *,
    sample: str = "sample",
    landmarks: pd.DataFrame | None = None,
    truth_dir: str | Path | None = None,
) -> dict:
    """Register, resolution-match and QC one sample.

    ``st``: ingested ST (spots, µm); ``msi``: ingested MSI (pixels, own frame µm, with
    ``obs['on_tissue']``). Returns ``transform``, ``msi_aligned`` (all pixels; ``obsm['spatial']``
    in the ST frame, ``obsm['spatial_native']`` kept), ``rna`` and ``msi_spots`` (paired on the
    spots with enough MSI coverage) and ``qc``.
    """
    meta_st = st.uns.get(Key.uns.spatialfuse, {})
    meta_msi = msi.uns.get(Key.uns.spatialfuse, {})
    px = float(meta_msi["pixel_size_um"])
    spot_um = float(meta_st.get("spot_diameter_um", 55.0))
    spot_shape = meta_st.get("spot_shape", "disk")
    native = np.asarray(msi.obsm[Key.obsm.spatial], float)
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    st_xy = np.asarray(st.obsm[Key.obsm.spatial], float)
    box = meta_st.get("capture_box_um")
    pad = spot_um / 2
    capture_box = np.asarray(box, float) if box is not None else np.r_[st_xy.min(0) - pad, st_xy.max(0) + pad]
    qc: dict = {"sample": sample, "msi_pixel_size_um": px, "spot_diameter_um": spot_um}
    method = params.get("method", "auto")
    if landmarks is not None and method in ("auto", "landmarks"):
        T, diag = register_landmarks(landmarks[["st_x_um", "st_y_um"]].to_numpy(),
                                     landmarks[["msi_x_um", "msi_y_um"]].to_numpy())
        T.meta["method"] = "landmarks_affine"
    elif method == "landmarks":
        raise InputError("align.method is 'landmarks' but the samples sheet gives no landmarks "
                         "file for this sample", sample)
    elif method == "identity":
        T, diag = Transform(np.eye(3)), {}
        T.meta["method"] = "identity"
    else:
        pitch = 100.0 if spot_shape == "disk" else spot_um
        T, diag = register_masks(
            st_xy, capture_box, native, on, msi_pixel_um=px, st_pitch_um=pitch,
            rotation_step_deg=float(params.get("rotation_step_deg", 4.0)),
            scales=tuple(params.get("scales", (0.9, 0.95, 1.0, 1.05, 1.1))),
            allow_reflection=bool(params.get("allow_reflection", True)),
            refine=bool(params.get("refine_affine", True)),
        )
        T.meta["method"] = "auto_mask_affine"
    qc.update(diag)
    qc["transform"] = T.decompose()

    # aligned MSI: every pixel in the ST frame
    aligned = msi.copy()
    aligned.obsm[Key.obsm.spatial_native] = native
    aligned.obsm[Key.obsm.spatial] = T(native)

    # overlap QC: tissue masks on a common grid inside the capture area
    res = max(px, 25.0)
    grid = Grid(capture_box[:2] - 100, capture_box[2:] + 100, res)
    st_mask = _mask_image(grid, st_xy, 60.0)
    cap = box_mask(grid, capture_box)
    msi_mask = _mask_image(grid, aligned.obsm[Key.obsm.spatial][on], 0.6 * px) * cap
    qc["tissue_dice"] = dice(st_mask, msi_mask)

    # resolution matching
    W = overlap_weights(st_xy, spot_um, native, px, T, spot_shape=spot_shape,
                        subcell_um=float(params.get("subcell_um", 3.0)))
    spot_area = np.pi * (spot_um / 2) ** 2 if spot_shape == "disk" else spot_um**2
    lin = msi.X.copy()
    lin = lin.expm1() if sp.issparse(lin) else np.expm1(lin)
    V, coverage, n_pix = aggregate(W, lin, spot_area)
    R, _, _ = aggregate(W, msi.layers[Key.layers.intensity], spot_area)
    min_cov = float(params.get("min_coverage", 0.5))
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
    msi_spots.uns[Key.uns.spatialfuse] = dict(meta_msi, aggregated_to="st_spots")
    rna = st[covered].copy()
    rna.obs[Key.obs.coverage] = coverage[covered]
    st_obs_cov = pd.DataFrame({Key.obs.coverage: coverage, Key.obs.n_pixels: n_pix,
                               Key.obs.low_coverage: ~covered}, index=st.obs_names)

    if truth_dir is not None:
        te = truth_error(T, truth_dir, msi.obs, px)
        if te:
            qc.update(te)
    if landmarks is not None:
        qc.setdefault("landmark_error_um_mean", float(np.mean(np.linalg.norm(
            T(landmarks[["msi_x_um", "msi_y_um"]].to_numpy())
            - landmarks[["st_x_um", "st_y_um"]].to_numpy(), axis=1))))

    min_dice = float(params.get("min_dice", 0.6))
    warnings = []
    if qc["tissue_dice"] < min_dice:
        warnings.append(f"tissue overlap (Dice {qc['tissue_dice']:.2f}) is below "
                        f"align.min_dice={min_dice}: the registration may be wrong")
    if covered.mean() < 0.5:
        warnings.append(f"only {covered.mean():.0%} of ST spots have MSI coverage >= {min_cov}")
    qc["warnings"] = warnings
    qc["flagged"] = bool(warnings)
    for w in warnings:
        log.warning("REGISTRATION FLAGGED (%s): %s", sample, w)
    return {"transform": T, "msi_aligned": aligned, "rna": rna, "msi_spots": msi_spots,
            "coverage": st_obs_cov, "qc": qc}
