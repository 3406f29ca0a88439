"""Registration benchmark: simulated MSI/Visium pairs with known transforms.

Each case is a simulated sample (``spatialfuse.simulate``) with a random rotation (0–360°),
mirror, scale (0.9–1.1) and smooth non-rigid warp (0–50 µm), an MSI pixel of 10–50 µm, and one
of these geometries: the usual blob; tissue cut at the capture edge with the MSI raster cropped
(partial overlap both ways); a disc (symmetric outline: only the inner structure tells rotation
and mirror); an adjacent section (the MSI section's tissue and domains deformed by a further
20 µm, short-wavelength field that no smooth registration should follow).

Methods, on the same cases:
* ``spatialfuse`` — automatic, landmark-free: coarse search + affine + B-spline (the default);
* ``spatialfuse-affine`` — the same without the non-rigid step;
* ``landmark-affine`` — MAGPIE's approach: a least-squares affine through 8 landmarks placed by a
  simulated annotator with 10 µm (SD) placement error in each section;
* ``spatialfuse+landmarks`` — the automatic refinement started from those landmarks;
* ``best-affine (truth fit)`` — the least-squares affine through the simulator's per-pixel truth:
  the lowest error any affine registration can reach (the rest is the non-rigid warp);
* optional (``--peers``): SpatialMETA 0.0.3's alignment module run as its tutorial runs it, in its
  own venv (``peer_spatialmeta_align.py``). It needs a histology image of the ST section (an
  H&E-like image is rendered from the simulated section) and a manual rotation/flip before it
  starts: it is handed the TRUE rotation and mirror (``spatialmeta``), and in a second variant
  also the TRUE scale and a centroid-to-centroid translation (``spatialmeta-init``; the error of
  that start itself, before SpatialMETA fits anything, is reported on its own row). Its CPU
  time is the fit's (VAE + alignment; one torch thread).

Each found affine (ours, the landmark one) is also compared with the truth's best affine, its
offset split into shift, rotation, scale and anisotropy, with the mean ± standard error of each
over the cases: a shared bias of the fit would show there (``affine_offset``).

QC flag: each case's automatic registration is counted as flagged or not against "wrong"
(median TRE > 100 µm), and three deliberately wrong placements of each found transform (rotated
180°, mirrored, shifted 300 µm) must all be flagged.

Reported per case group and method: median and 90th-percentile target registration error (TRE,
µm, over MSI pixels that are mostly tissue, against the simulator's per-pixel truth), the median
TRE in MSI pixels, and CPU seconds per sample (registration only; the ``align`` column adds QC and
the exact-area resolution matching of the whole stage). Visium-size samples: 6.5 mm capture
area, ~4,000 array spots (~1,700 under tissue); at 10 µm pixels the MSI raster has ~3×10^5
pixels.

    python benchmarks/align_benchmark.py            # full (~15–25 min on 2 cores; run it under
                                                    # flock /tmp/spatialfuse_heavy.lock)
    python benchmarks/align_benchmark.py --quick    # a 3 mm capture area, fewer cases (~3 min)
    python benchmarks/align_benchmark.py --quick --peers spatialmeta spatialmeta-init
    python benchmarks/align_benchmark.py --st-bin-um 16   # the same cases with Visium HD sections
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialfuse.align.features import in_box  # noqa: E402
from spatialfuse.align.qc import error_summary, truth_error_table  # noqa: E402
from spatialfuse.align.register import register_landmarks  # noqa: E402
from spatialfuse.align.stage import (  # noqa: E402
    DEFAULTS,
    OUTSIDE_CAPTURE_NOTE,
    assess_registration,
    prepare_inputs,
    register,
    registration_uncertainty,
    restart_objective_ratio,
    run_align,
)
from spatialfuse.align.qc import wrong_placements  # noqa: E402
from spatialfuse.align.transform import Transform, fit_affine  # noqa: E402
from spatialfuse.constants import Key  # noqa: E402
from spatialfuse.simulate import DemoParams, simulate_sample, simulated_sections  # noqa: E402
from spatialfuse.pixels import pixel_side  # noqa: E402
from spatialfuse.simulate.demo import msi_pixel_xy  # noqa: E402

GEOMETRIES = {
    "blob": {},
    "partial": {"tissue_offset_frac": 0.22, "msi_crop_frac": 0.2},
    "disc": {"outline_irregularity": 0.0},
    "adjacent": {"adjacent_section_um": 20.0},
}


def cases(quick: bool, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    pixels = (10.0, 20.0, 30.0, 40.0, 50.0)
    out = []
    per_geo = 2 if quick else 5
    for g, extra in GEOMETRIES.items():
        for i in range(per_geo):
            px = pixels[(i + len(out)) % len(pixels)] if not quick else (20.0, 40.0)[i % 2]
            out.append(dict(name=f"{g}-{i}", geometry=g, seed=int(rng.integers(1 << 30)),
                            capture_size_um=3000.0 if quick else 6500.0,
                            tissue_radius_frac=0.36 if quick else 0.33,
                            msi_pixel_size_um=px, warp_um=float(rng.uniform(0, 50)),
                            n_landmarks=8, landmark_noise_um=10.0, **extra))
    return out


#: SpatialMETA's own environment (see benchmarks/peer_spatialmeta_align.py)
SPATIALMETA_PYTHON = os.environ.get("SPATIALMETA_PYTHON", "/tmp/smv/bin/python")
#: µm per pixel of the histology image handed to SpatialMETA (Visium "hires" images are ~3.5–4.5)
SPATIALMETA_IMAGE_UM_PER_PX = 5.0


def he_image(sim: dict, extent_um: float, um_per_px: float) -> np.ndarray:
    """An H&E-like image of the ST section (pixel (row r, column c) centred at (c, r) ×
    ``um_per_px`` µm): tissue pink, shade by domain, background near white."""
    n = int(np.ceil(extent_um / um_per_px))
    g = np.arange(n) * um_per_px
    xx, yy = np.meshgrid(g, g, indexing="xy")
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    tis = sim["inside"](xy)
    dom = sim["domain_of"](xy[tis])
    img = np.full((len(xy), 3), 0.96)
    img[tis] = np.array([0.80, 0.50, 0.72]) - 0.04 * (dom[:, None] % 4)
    return img.reshape(n, n, 3)


def point_error(pred_st_um: np.ndarray, xy_index: np.ndarray, truth: pd.DataFrame,
                pixel_um: float, min_tissue_fraction: float = 0.5) -> dict:
    """TRE of predicted ST positions of MSI pixels (given by their raster index) against the
    simulator's per-pixel truth, over pixels that are mostly tissue."""
    t = truth.set_index(["x", "y"])
    key = pd.MultiIndex.from_arrays([xy_index[:, 0], xy_index[:, 1]])
    t = t.reindex(key)
    ok = (t["tissue_fraction"] >= min_tissue_fraction).to_numpy()
    err = np.linalg.norm(pred_st_um[ok] - t.loc[ok, ["st_x_um", "st_y_um"]].to_numpy(), axis=1)
    return error_summary(err, pixel_um)


def true_rotation_flip(tr: dict) -> np.ndarray:
    """The simulator's true rotation (and mirror) as a 2×2 matrix, without its scale."""
    t = np.deg2rad(tr["rotation_deg"])
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ (
        np.diag([-1.0, 1.0]) if tr["reflect"] else np.eye(2))


def on_centroid(q: np.ndarray, st) -> np.ndarray:
    """Points ``q`` translated so that their centroid lies on the ST spots' centroid."""
    from spatialfuse.constants import Key

    return q - q.mean(0) + np.asarray(st.obsm[Key.obsm.spatial], float).mean(0)


def spatialmeta_start(sim: dict, st, msi) -> dict:
    """TRE of the start handed to ``spatialmeta-init`` before it fits anything: the true
    rotation/mirror/scale and the MSI tissue centroid on the ST spots' centroid."""
    from spatialfuse.constants import Key

    tr, px = sim["transform"], msi_pixel_xy(sim["params"])
    M = tr["scale"] * true_rotation_flip(tr)
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    idx = msi.obs.loc[on, ["x", "y"]].to_numpy(float)
    pred = on_centroid(idx * px @ M.T, st)
    return point_error(pred, idx.astype(int), sim["msi_pixels"], px)


def run_spatialmeta(sim: dict, st, msi, seed: int, initial_guess: bool = False,
                    diffeo: bool = False) -> tuple[dict, float]:
    """SpatialMETA's alignment (its own venv, via ``peer_spatialmeta_align.py``) on one case.

    It is given what its tutorial gives it: the ST section's histology image, the on-tissue MSI
    pixels (our ingest's tissue mask) and the manual pre-rotation/flip — here the simulator's
    TRUE rotation and mirror — so it has to find scale, translation and a small rotation.
    ``initial_guess``: also the TRUE scale (as ``fit_alignment(initial_scale=...)``) and the MSI
    tissue centroid placed on the ST spots' centroid (its translation starts at the MSI
    coordinates' own centroid). ``diffeo``: its diffeomorphic refinement switched on.
    Returns the TRE table and the peer's CPU seconds (fit only)."""
    import anndata as ad
    import scipy.sparse as sp

    from spatialfuse.constants import Key

    tr = sim["transform"]
    RF = true_rotation_flip(tr)
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    idx = msi.obs.loc[on, ["x", "y"]].to_numpy(float)
    X = msi.layers["intensity"][on]
    sm = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=pd.DataFrame(index=msi.obs_names[on]),
                    var=pd.DataFrame(index=msi.var_names))
    q = idx @ RF.T
    box = st.uns[Key.uns.spatialfuse]["capture_box_um"]
    s = 1.0 / SPATIALMETA_IMAGE_UM_PER_PX
    init = "auto"
    if initial_guess:
        q = q - q.mean(0) + np.asarray(st.obsm[Key.obsm.spatial], float).mean(0) * s
        init = repr(tr["scale"] * sim["params"].msi_pixel_size_um * s)
    sm.obsm["spatial"] = q
    img = he_image(sim, max(box[2], box[3]) + 100.0, SPATIALMETA_IMAGE_UM_PER_PX)
    counts = st.layers[Key.layers.counts]
    stx = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=pd.DataFrame(index=st.obs_names),
                     var=pd.DataFrame(index=st.var_names))
    stx.obsm["spatial"] = np.asarray(st.obsm[Key.obsm.spatial], float)  # full-res px = µm
    stx.uns["spatial"] = {"sim": {"images": {"hires": img.astype(np.float32)},
                                  "scalefactors": {"tissue_hires_scalef": s,
                                                   "spot_diameter_fullres": 55.0}}}
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(dir=os.environ.get("SPATIALMETA_TMP")) as d:
        stx.write_h5ad(f"{d}/st.h5ad")
        sm.write_h5ad(f"{d}/sm.h5ad")
        env = dict(os.environ, SPATIALMETA_NO_TORCHVISION="1", OMP_NUM_THREADS="1",
                   MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
        r = subprocess.run([SPATIALMETA_PYTHON, str(here / "peer_spatialmeta_align.py"),
                            f"{d}/st.h5ad", f"{d}/sm.h5ad", f"{d}/out.npy", str(seed), init,
                            str(int(diffeo))],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"SpatialMETA failed: {r.stderr[-2000:]}")
        pts = np.load(f"{d}/out.npy")
    stats = dict(kv.split("=") for kv in r.stdout.strip().splitlines()[-1].split())
    err = point_error(pts, idx.astype(int), sim["msi_pixels"], msi_pixel_xy(sim["params"]))
    return err, float(stats["cpu_s"])


#: a registration whose median error exceeds this is "wrong" (spots paired with the wrong pixels)
WRONG_UM = 100.0
#: a registration further off than this (half the Visium pitch, median TRE) is one a flag
#: should catch too, though not wrong in the sense of WRONG_UM
OFF_UM = 50.0


def deliberately_wrong(T: Transform, tissue_xy: np.ndarray) -> dict[str, Transform]:
    """The found transform rotated by 180°, mirrored (about the tissue centre) and shifted by
    300 µm: registrations the QC flag must catch."""
    w = wrong_placements(T, T(tissue_xy).mean(0), 300.0)
    return {k: w[k] for k in ("rotate 180", "mirror", "shift +x")}


def tre(T, sim, msi, capture_box=None) -> dict:
    """TRE of ``T`` over the MSI tissue pixels; with ``capture_box``, also over those whose true
    position lies in the ST capture area (``*_in_capture``)."""
    return truth_error_table(T, sim["msi_pixels"], msi.obs, msi_pixel_xy(sim["params"]),
                             capture_box=capture_box)


#: optional peers (``--peers``): label and run_spatialmeta keyword arguments
PEERS = {
    "spatialmeta": ("SpatialMETA 0.0.3 (given true rot/flip)", {}),
    "spatialmeta-init": ("SpatialMETA 0.0.3 (given true rot/flip/scale + centroid)",
                         {"initial_guess": True}),
}


def true_inverse_field(pts_xy: np.ndarray, sim: dict, A: np.ndarray) -> np.ndarray:
    """The TRUE residual field on top of the affine ``A`` in the fit's inverse form: ``e(x)``
    with ``u = A⁻¹(x + e(x))`` the true MSI position of ST point ``x`` (NaN outside the MSI
    raster, where the simulator gives no truth)."""
    from scipy.interpolate import LinearNDInterpolator

    truth = sim["msi_pixels"]
    u = LinearNDInterpolator(truth[["st_x_um", "st_y_um"]].to_numpy(),
                             truth[["msi_x_um", "msi_y_um"]].to_numpy())(pts_xy)
    Ainv = np.linalg.inv(A)
    return (u - Ainv[:2, 2]) @ np.linalg.inv(Ainv[:2, :2]).T - pts_xy


def _fit_field(field, Phi, e: np.ndarray) -> np.ndarray:
    """Control values of ``field`` fitted to the displacements ``e`` at the points whose
    basis rows are ``Phi`` (least squares with a tiny bending + ridge term, so control points
    without data stay defined)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    PtP = (Phi.T @ Phi).tocsc()
    M = (PtP + 1e-3 * PtP.diagonal().mean() * (field.bending() + sp.identity(field.n))).tocsc()
    return np.stack([spla.spsolve(M, Phi.T @ e[:, k]) for k in range(2)], 1)


def truth_on_bspline(pts, raster, sim: dict, A: np.ndarray, box: np.ndarray, spacing_um: float,
                     sigma_um: float = 0.0, feature_weight: float = 1.0):
    """The TRUE inverse warp on the registration's own B-spline over the found affine ``A``,
    and the objective it is scored with (full resolution, balanced weights, as in the fit),
    calibrated at ``A``. Returns a namespace: ``field`` (its ``coef`` the fitted truth),
    ``Phi``, ``e_ok``/``ok`` (the truth at the points inside the MSI raster), ``obj``, ``th0``
    (the affine alone), ``th1`` (affine + true field), ``ev0`` (the objective at ``th0``, with
    gradients) and ``h`` (mean data curvature per control coefficient: the scale of the fit's
    bending and ridge penalties). ``sigma_um`` blurs the ST side only."""
    from types import SimpleNamespace

    from scipy.spatial import cKDTree

    from spatialfuse.align.refine import BSplineField, _affine_to_theta, _Objective

    e_all = true_inverse_field(pts.xy, sim, A)
    ok = np.isfinite(e_all).all(1)
    e_ok = e_all[ok]
    e = e_ok[cKDTree(pts.xy[ok]).query(pts.xy)[1]]  # beyond the raster: nearest known value
    field = BSplineField.covering(box[:2], box[2:], spacing_um)
    Phi = field.basis(pts.xy)
    field.coef = _fit_field(field, Phi, e)
    scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    obj = _Objective(pts, raster.level(pts.footprint_sigma_um / scale), sigma_um, feature_weight,
                     field, True)
    th0 = np.r_[_affine_to_theta(A), np.zeros(2 * field.n)]
    th1 = np.r_[_affine_to_theta(A), field.coef.T.ravel()]
    obj.calibrate(th0)
    ev0 = obj.evaluate(th0, jac=True)
    dn = obj.normal_equations(th0, ev0, True)[0].diagonal()[6:]
    return SimpleNamespace(field=field, Phi=Phi, e_ok=e_ok, ok=ok, obj=obj, th0=th0, th1=th1,
                           ev0=ev0, h=float(dn[dn > 0].mean()))


def warp_oracle(inp, sim: dict, A: np.ndarray, smoothness: float = DEFAULTS["nonrigid_smoothness"],
                spacing_um: float = DEFAULTS["nonrigid_spacing_um"]) -> dict:
    """Why the B-spline does not recover the warp: the registration's own B-spline fitted to the
    TRUE inverse map (from the simulator's per-pixel truth) on top of the found affine ``A``;
    its TRE, the data objective (full resolution, balanced weights, as in the fit) at ``A``
    and at the truth, and the bending + ridge penalty the fit would pay for the true field at
    ``smoothness``. A warp is recoverable only where the data gain exceeds that penalty."""
    import scipy.sparse as sp

    from spatialfuse.align.refine import _RIDGE, _affine_to_theta
    from spatialfuse.align.register import transform_from_fit

    pts, raster = inp.pts, inp.raster
    if inp.fine is not None:  # the inputs of the fine fit (domain channels)
        pts, raster = inp.fine.inputs(A)
    t = truth_on_bspline(pts, raster, sim, A, inp.capture_box, spacing_um)
    field, obj, ev, h = t.field, t.obj, t.ev0, t.h
    T = transform_from_fit(A, field, {"method": "truth_bspline"})
    Rc = smoothness * h * field.bending() + _RIDGE * h * sp.identity(field.n)
    c = field.coef
    penalty = float(sum(c[:, k] @ (Rc @ c[:, k]) for k in range(2)))
    # the same over the control points whose support touches the MSI raster only: beyond it the
    # true field is extrapolated (nearest known value) and its bending there is no cost the
    # data would make the fit pay. Priced twice: the field above on those points, and a field
    # fitted to the truth on the raster's points alone (its value beyond left to the small
    # bending/ridge term, i.e. the cheapest continuation), with its own data gain
    act = field.touching(pts.xy[ev["v"] > 0])
    Ra = smoothness * h * field.bending(act) + _RIDGE * h * sp.diags(act.astype(float))
    pen_r = float(sum(c[:, k] @ (Ra @ c[:, k]) for k in range(2)))
    ci = _fit_field(field, t.Phi[np.nonzero(t.ok)[0]], t.e_ok)  # the raster's points only
    pen_in = float(sum(ci[:, k] @ (Ra @ ci[:, k]) for k in range(2)))
    return {"oracle_tre_um": tre_table_median(T, sim, inp), "oracle_E_affine": ev["E"],
            "oracle_E_truth": obj.evaluate(t.th1)["E"], "oracle_penalty": penalty,
            "oracle_penalty_raster": pen_r, "oracle_penalty_raster_fit": pen_in,
            "oracle_E_truth_raster_fit": obj.evaluate(np.r_[_affine_to_theta(A), ci.T.ravel()])["E"]}


def block_diagnostic(inp, sim: dict, A: np.ndarray, case: str, **kw) -> pd.DataFrame:
    """Go/no-go test of block matching: the local shift of each window found by exhaustive
    search of the data objective (:func:`spatialfuse.align.blockmatch.local_shifts`) against
    the TRUE local displacement (mean of the true residual field over the window's tissue
    spots, on top of the found affine ``A``). One row per window."""
    from spatialfuse.align.blockmatch import local_shifts, smooth_shifts

    pts = inp.pts
    smooth_um = float(kw.pop("smooth_um", 300.0))
    ls = local_shifts(pts, inp.raster, A, inp.capture_box, **kw)
    sm = smooth_shifts(ls, ls.centre, smooth_um)
    e = true_inverse_field(pts.xy, sim, A)
    tis = (pts.tissue > 0.5) & np.isfinite(e).all(1)
    W = ls.members.multiply(tis[None, :].astype(float)).tocsr()
    cnt = np.asarray(W.sum(1)).ravel()
    true = np.asarray(W @ np.nan_to_num(e)) / np.maximum(cnt, 1)[:, None]
    df = pd.DataFrame({"case": case, "cx": ls.centre[:, 0], "cy": ls.centre[:, 1],
                       "est_x": ls.shift[:, 0], "est_y": ls.shift[:, 1], "true_x": true[:, 0],
                       "true_y": true[:, 1], "curvature": ls.curvature, "drop": ls.drop,
                       "stiff_x": ls.stiff[:, 0], "stiff_y": ls.stiff[:, 1],
                       "smooth_x": sm[:, 0], "smooth_y": sm[:, 1],
                       "at_edge": ls.at_edge, "n_tissue": ls.n_tissue, "n_truth": cnt})
    return df[df["n_truth"] >= 5]


def _block_stats(w: pd.DataFrame) -> str:
    est, tru = w[["est_x", "est_y"]].to_numpy(), w[["true_x", "true_y"]].to_numpy()
    rms_true = float(np.sqrt(np.mean(np.sum(tru**2, 1))))
    rms_err = float(np.sqrt(np.mean(np.sum((est - tru) ** 2, 1))))
    r = float(np.corrcoef(est.ravel(), tru.ravel())[0, 1]) if len(w) > 2 else float("nan")
    # the same without each case's mean shift (what a smooth field adds to the affine)
    dc = w.groupby("case")[["est_x", "est_y", "true_x", "true_y"]].transform("mean").to_numpy()
    e0, t0 = est - dc[:, :2], tru - dc[:, 2:]
    r0 = float(np.corrcoef(e0.ravel(), t0.ravel())[0, 1]) if len(w) > 2 else float("nan")
    # along each window's best-pinned direction only (an outline constrains its normal)
    sd = w[["stiff_x", "stiff_y"]].to_numpy()
    es, ts = np.sum(est * sd, 1), np.sum(tru * sd, 1)
    rs = float(np.corrcoef(es, ts)[0, 1]) if len(w) > 2 else float("nan")
    return (f"{len(w):4d} windows: RMS true {rms_true:5.1f} um, RMS error {rms_err:5.1f} um, r {r:+.2f}; "
            f"stiff direction: RMS true {np.sqrt(np.mean(ts**2)):5.1f}, error {np.sqrt(np.mean((es - ts)**2)):5.1f} um, "
            f"r {rs:+.2f}; "
            f"case mean removed: RMS true {np.sqrt(np.mean(np.sum(t0**2, 1))):5.1f}, "
            f"RMS error {np.sqrt(np.mean(np.sum((e0 - t0) ** 2, 1))):5.1f} um, r {r0:+.2f}")


def print_block_diagnostic(wins: pd.DataFrame, min_warp_um: float = 20.0) -> None:
    """Estimated vs true local shifts: all windows, and the most confident half (by curvature
    and by objective drop, ranked within each case), over cases with a warp > ``min_warp_um``."""
    w = wins[wins["warp_um"] > min_warp_um]
    if w.empty:
        return
    print(f"\nblock matching vs truth ({w['case'].nunique()} cases with warp > {min_warp_um:.0f} um):")
    print("  all                 " + _block_stats(w))
    for col in ("curvature", "drop"):
        rank = w.groupby("case")[col].rank(pct=True)
        print(f"  top half by {col:9s} " + _block_stats(w[(rank > 0.5) & ~w["at_edge"]]))
    sm = w.assign(est_x=w["smooth_x"], est_y=w["smooth_y"])
    print("  Hessian-weighted kernel average of the windows (what a smooth field fitted to them gives):")
    print("  all                 " + _block_stats(sm))
    print("  per case (all windows; then their kernel average):")
    for case, g in w.groupby("case", sort=False):
        print(f"    {case:>11}  " + _block_stats(g))
        print(f"    {'':>11}  " + _block_stats(sm[sm["case"] == case]))


def median_affine(X: np.ndarray, Y: np.ndarray, A: np.ndarray, iters: int = 50) -> np.ndarray:
    """The affine (3×3) that minimises the MEDIAN distance between ``X`` mapped and ``Y``, not
    the squared sum: reweighted least squares towards the sum of distances from ``A``, then a
    Nelder–Mead polish of the median itself. A reference for the median TRE ceiling of any
    affine (the TRE is a median; least squares is not the best affine for it)."""
    from scipy.optimize import minimize

    Xh = np.c_[X, np.ones(len(X))]
    B = np.asarray(A, float)[:2]
    for _ in range(iters):
        w = np.sqrt(1.0 / np.maximum(np.linalg.norm(Xh @ B.T - Y, axis=1), 1e-3))[:, None]
        B = np.linalg.lstsq(Xh * w, Y * w, rcond=None)[0].T
    res = minimize(lambda v: np.median(np.linalg.norm(Xh @ v.reshape(2, 3).T - Y, axis=1)),
                   B.ravel(), method="Nelder-Mead", options=dict(maxiter=4000, xatol=1e-4, fatol=1e-4))
    return np.vstack([res.x.reshape(2, 3), [0.0, 0.0, 1.0]])


def tre_table_median(T, sim, inp) -> float:
    obs = pd.DataFrame(np.round(inp.native / inp.pixel_um).astype(int), columns=["x", "y"])
    return truth_error_table(T, sim["msi_pixels"], obs, inp.pixel_um)["truth_error_um_median"]


def alternative_fits(diag: dict) -> dict:
    """How far the registration's own alternative affine fits put the MSI tissue from the
    first one (RMS µm): the refit with balanced weights, and the refit from the best similarity
    (with its objective over the kept fit's)."""
    b, s = diag.get("balanced_fit") or {}, diag.get("similarity_restart") or {}
    return {"balanced_moved_um": b.get("moved_um"), "restart_moved_um": s.get("moved_um"),
            "restart_objective_ratio": restart_objective_ratio(diag)}


def affine_offset(A_found: np.ndarray, A_ref: np.ndarray, st_xy: np.ndarray) -> dict:
    """How a found affine (MSI µm → ST µm, 3×3) differs from a reference one (the truth's best
    affine), split into parts: its shift at the centroid of ``st_xy`` (the tissue, ST frame),
    rotation, isotropic scale and anisotropy (ratio of the singular values) of ``A_found ∘
    A_ref⁻¹``, and the four linear components of ``A_ref⁻¹ ∘ A_found`` in the MSI raster's own
    axes (in %), where a bias of the MSI side (its pixel grid, its partial-volume estimate)
    would show as the same sign in every case."""
    D = np.asarray(A_found, float) @ np.linalg.inv(A_ref)
    L = D[:2, :2]
    U, s, Vt = np.linalg.svd(L)
    R = U @ Vt
    c = np.asarray(st_xy, float).mean(0)
    shift = L @ c + D[:2, 2] - c
    E = (np.linalg.inv(A_ref) @ np.asarray(A_found, float))[:2, :2] - np.eye(2)
    xy = np.asarray(st_xy, float)
    rms = float(np.sqrt(np.mean(np.sum((xy @ L.T + D[:2, 2] - xy) ** 2, 1))))
    return dict(offset_rms_um=rms, offset_shift_x_um=float(shift[0]), offset_shift_y_um=float(shift[1]),
                offset_shift_um=float(np.hypot(*shift)),
                offset_rotation_deg=float(np.degrees(np.arctan2(R[1, 0], R[0, 0]))),
                offset_scale_pct=float((np.sqrt(abs(np.linalg.det(L))) - 1) * 100),
                offset_anisotropy_pct=float((s[0] / s[1] - 1) * 100),
                offset_msi_xx_pct=float(E[0, 0] * 100), offset_msi_yy_pct=float(E[1, 1] * 100),
                offset_msi_xy_pct=float(E[0, 1] * 100), offset_msi_yx_pct=float(E[1, 0] * 100))


def run_case(c: dict, peers: tuple[str, ...] = (), peers_only: bool = False,
             oracle: bool = False, params: dict | None = None, fast: bool = False,
             block: dict | None = None, median_ref: bool = False) -> list[dict]:
    """All methods on one case. ``params``: align config overrides for our methods; ``median_ref``:
    also the affine fitted to the truth for the lowest median TRE (slow: a Nelder–Mead over
    every tissue pixel's error); ``fast``:
    only the automatic registration and the references (no QC/flag checks); ``block``: also the
    block-matching diagnostic with these :func:`local_shifts` arguments (its windows in
    ``rows[0]["block_windows"]``)."""
    params = dict(params or {})
    pp = {**DEFAULTS, **params}
    kw = {k: v for k, v in c.items() if k not in ("name", "geometry", "seed", "st_pool_um")}
    p = DemoParams(seed=c["seed"], n_genes=300, n_metabolites=60, n_links=12, **kw)
    sim = simulate_sample(p)
    st, msi = simulated_sections(sim, c.get("st_pool_um"))
    lm = sim["landmarks"]
    rows = []
    base = dict(case=c["name"], geometry=c["geometry"], pixel_um=pixel_side(msi_pixel_xy(p)),
                warp_um=round(p.warp_um, 1), msi_pixels=msi.n_obs, spots=st.n_obs)

    def timed(fn):
        t0 = time.process_time()
        out = fn()
        return out, time.process_time() - t0

    inps, T_found, diags = {}, {}, {}
    box = np.asarray(st.uns[Key.uns.spatialfuse]["capture_box_um"], float)

    def err(T):
        return tre(T, sim, msi, box)

    ours = (("spatialfuse", params, None),
            ("spatialfuse-affine", {**params, "nonrigid": False}, None),
            ("spatialfuse+landmarks", params, lm))
    for method, mparams, landmarks in () if peers_only else ours[:1] if fast else ours:
        def reg():
            inp = prepare_inputs(st, msi, int(pp["feature_components"]), 0, int(pp["domain_clusters"]),
                                 float(pp["domain_smoothing_um"]))
            inps[method] = inp
            return register(inp, mparams, landmarks=landmarks, sample=c["name"])

        (T, diags[method]), cpu = timed(reg)
        if method == "spatialfuse":
            T_auto = T
        T_found[method] = T
        rows.append(dict(base, method=method, cpu_s=cpu, **err(T),
                         **(alternative_fits(diags[method]) if method == "spatialfuse" else {})))
    (T, d), cpu = timed(lambda: register_landmarks(lm[["st_x_um", "st_y_um"]].to_numpy(),
                                                    lm[["msi_x_um", "msi_y_um"]].to_numpy()))
    rows.append(dict(base, method="landmark-affine", cpu_s=cpu, **err(T),
                     landmark_loo_um=d["landmark_loo_error_um_median"]))
    T_found["landmark-affine"] = T
    # the ceiling of any affine: least squares on the per-pixel truth (tissue pixels)
    t = sim["msi_pixels"][sim["msi_pixels"]["tissue_fraction"] >= 0.5]
    src, dst = t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy()
    A = fit_affine(src, dst)
    rows.append(dict(base, method="best-affine (truth fit)", cpu_s=0.0,
                     **err(Transform(A, meta={"method": "truth_affine"}))))
    # ... and on the pixels in the capture area only, the part a registration has ST data for
    # (tissue cut at the capture edge: the rest is extrapolated)
    inside = in_box(dst, box)
    if inside.sum() >= 3:
        Ai = fit_affine(src[inside], dst[inside])
        rows.append(dict(base, method="best-affine in the capture area (truth fit)", cpu_s=0.0,
                         **err(Transform(Ai, meta={"method": "truth_affine_in_capture"}))))
    for r in rows:  # each found affine against the truth's best one
        if r["method"] in T_found:
            r.update(affine_offset(T_found[r["method"]].affine, A, dst))
    if median_ref:
        M = median_affine(src, dst, A)
        rows.append(dict(base, method="best-affine for the median (truth fit)", cpu_s=0.0,
                         **tre(Transform(M, meta={"method": "truth_median_affine"}), sim, msi)))
    for peer in peers:
        label, kw = PEERS[peer]
        err, cpu = run_spatialmeta(sim, st, msi, c["seed"] % 1000, **kw)
        rows.append(dict(base, method=label, cpu_s=cpu, **err))
        if kw.get("initial_guess"):
            rows.append(dict(base, method="  its start: true rot/flip/scale + centroid (no fit)",
                             cpu_s=0.0, **spatialmeta_start(sim, st, msi)))
    if peers_only:
        return rows
    if block is not None:
        bw = block_diagnostic(inps["spatialfuse"], sim, T_auto.affine, c["name"], **block)
        rows[0]["block_windows"] = bw.assign(warp_um=base["warp_um"], pixel_um=base["pixel_um"])
    if fast:
        if "spatialfuse" in inps:  # the stage's uncertainty estimate, as run_align computes it
            u = registration_uncertainty(inps["spatialfuse"], T_auto, diags["spatialfuse"], pp)
            rows[0]["affine_uncertainty_um"] = u.get("affine_uncertainty_um")
        if oracle:
            rows[0].update(warp_oracle(inps["spatialfuse"], sim, T_auto.affine))
        return rows
    out, cpu = timed(lambda: run_align(st, msi, params, sample=c["name"]))
    rows[0]["align_cpu_s"] = cpu
    rows[0]["flagged"] = out["qc"]["flagged"]
    rows[0]["similarity"] = out["qc"].get("feature_similarity")
    rows[0]["placement_margin"] = out["qc"].get("placement_margin")
    rows[0]["dice"] = out["qc"].get("tissue_dice")
    rows[0]["affine_uncertainty_um"] = out["qc"].get("affine_uncertainty_um")
    inp = inps["spatialfuse"]
    wrong = deliberately_wrong(T_auto, inp.raster.tissue_xy)
    rows[0]["wrong_flagged"] = sum(assess_registration(inp, W, params)["flagged"] for W in wrong.values())
    rows[0]["wrong_tried"] = len(wrong)
    if oracle:
        rows[0].update(warp_oracle(inp, sim, T_auto.affine))
    return rows


def main(argv=None) -> pd.DataFrame:
    global SPATIALMETA_IMAGE_UM_PER_PX
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 mm capture area, 8 cases")
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="draw the cases with these seeds (several: every draw, one table per "
                         "seed and one over all; 0 is the set the defaults were chosen on)")
    ap.add_argument("--summarise", nargs="+", default=None, metavar="TSV",
                    help="print the tables of earlier runs' --out files (pooled, one per file) "
                         "instead of running")
    ap.add_argument("--out", default=None, help="also write the per-case table (TSV) here")
    ap.add_argument("--only", default=None, help="run only cases whose name starts with this")
    ap.add_argument("--peers", nargs="*", default=[], choices=sorted(PEERS),
                    help="also run these peers (SpatialMETA needs its own venv: SPATIALMETA_PYTHON, "
                         "default /tmp/smv/bin/python; see benchmarks/peer_spatialmeta_align.py)")
    ap.add_argument("--spatialmeta-um-per-px", type=float, default=SPATIALMETA_IMAGE_UM_PER_PX,
                    help="µm per pixel of the histology image given to SpatialMETA (its cost grows "
                         "with the image's pixel count; Visium hires ≈ 4, lowres ≈ 11)")
    ap.add_argument("--warp-oracle", action="store_true",
                    help="also fit the B-spline to the TRUE warp: its TRE, the data objective at the "
                         "affine vs at the truth, and the penalty the fit would pay for it")
    ap.add_argument("--params", default="{}",
                    help='align config overrides for our methods, as JSON (e.g. \'{"domain_clusters": 0}\')')
    ap.add_argument("--fast", action="store_true",
                    help="only the automatic registration and the references (no QC, no flag checks)")
    ap.add_argument("--block-diagnostic", nargs="?", const="{}", default=None,
                    help="also search a local translation per window of the found affine by "
                         "exhaustive search of the data objective and compare it with the TRUE local "
                         "displacement; optional JSON of local_shifts arguments (window_um, "
                         "spacing_um, max_shift_um, step_um, sigma_um; smooth_um: the kernel of "
                         "the Hessian-weighted average of the windows, default 300)")
    ap.add_argument("--median-affine", action="store_true",
                    help="also the affine fitted to the truth for the lowest MEDIAN TRE (least squares "
                         "minimises the mean square, not the median the target is set on; slow)")
    ap.add_argument("--peers-only", action="store_true",
                    help="run only the peers (and the landmark/best-affine references), not ours")
    ap.add_argument("--pixel-aspect", type=float, default=1.0,
                    help="rectangular MSI pixels: each case's y step is this times its x step "
                         "(errors in pixels are then in sides of the square of the same area)")
    ap.add_argument("--st-bin-um", type=float, default=0.0,
                    help="> 0: the ST section is Visium HD, square bins of this side (e.g. 16), "
                         "instead of 55 µm spots; every case keeps its tissue, MSI and transform")
    ap.add_argument("--st-pool-um", type=float, default=None,
                    help="with --st-bin-um: pool the bins into squares of about this side first, "
                         "as ingest.st.visium_hd_pool_um does (e.g. 48)")
    args = ap.parse_args(argv)
    if args.summarise:
        df = pd.concat([read_run(f) for f in args.summarise], ignore_index=True)
        summarise(df)
        return df
    if args.pixel_aspect != 1.0 and args.peers:
        ap.error("--pixel-aspect: the peers are handed pixel indices as square pixels")
    SPATIALMETA_IMAGE_UM_PER_PX = args.spatialmeta_um_per_px
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows, windows = [], []
    drawn = [(seed, c) for seed in args.seed for c in cases(args.quick, seed)]
    for seed, c in drawn:
        if args.only and not c["name"].startswith(args.only):
            continue
        if len(args.seed) > 1:
            c["name"] = f"s{seed}:{c['name']}"
        if args.pixel_aspect != 1.0:
            c["msi_pixel_size_y_um"] = args.pixel_aspect * c["msi_pixel_size_um"]
        if args.st_bin_um > 0:
            c["st_bin_um"] = args.st_bin_um
            c["st_pool_um"] = args.st_pool_um
        t0 = time.perf_counter()
        r = run_case(c, tuple(args.peers), args.peers_only, args.warp_oracle, json.loads(args.params),
                     args.fast, None if args.block_diagnostic is None else json.loads(args.block_diagnostic),
                     args.median_affine)
        if "block_windows" in r[0]:
            windows.append(r[0].pop("block_windows"))
        rows += [dict(x, seed=seed) for x in r]
        print(f"{c['name']:>11}  px {c['msi_pixel_size_um']:>4.0f} um  warp {c['warp_um']:4.1f} um  "
              + "  ".join(f"{x['method']}: {x['truth_error_um_median']:6.1f} um" for x in r)
              + (f"  oracle penalty/gain {r[0]['oracle_penalty'] / (r[0]['oracle_E_affine'] - r[0]['oracle_E_truth']):.0f}x"
                 f" (on the raster's control points {r[0]['oracle_penalty_raster'] / (r[0]['oracle_E_affine'] - r[0]['oracle_E_truth']):.1f}x;"
                 f" fitted on the raster only {r[0]['oracle_penalty_raster_fit'] / (r[0]['oracle_E_affine'] - r[0]['oracle_E_truth_raster_fit']):.1f}x)"
                 if "oracle_penalty" in r[0] else "")
              + f"  ({time.perf_counter() - t0:.0f}s wall)", flush=True)
    df = pd.DataFrame(rows)
    if windows:
        print_block_diagnostic(pd.concat(windows, ignore_index=True))
    if args.out:
        df.to_csv(args.out, sep="\t", index=False)
    summarise(df)
    return df


def read_run(path: str) -> pd.DataFrame:
    """An earlier run's ``--out`` table; runs written before the seed column get their file
    name as the seed, so that each file is one draw."""
    d = pd.read_csv(path, sep="\t")
    if "seed" not in d:
        d["seed"] = Path(path).name
    return d.assign(seed=d["seed"].astype(str))


def summarise(df: pd.DataFrame) -> None:
    """Print the benchmark's tables from its per-case rows (one run, several seeds, or earlier
    runs' TSVs read back: one table per seed, then one over all cases)."""
    df = df.copy()
    df["tre_px"] = df["truth_error_um_median"] / df["pixel_um"]
    if "seed" in df and df["seed"].nunique() > 1 and not df["case"].str.contains(":").all():
        df["case"] = df["seed"].astype(str) + ":" + df["case"]  # runs read back: name the draw
    summary = df.groupby(["geometry", "method"], sort=False).agg(
        n=("case", "size"), median_tre_um=("truth_error_um_median", "median"),
        p90_tre_um=("truth_error_um_p90", "median"), median_tre_px=("tre_px", "median"),
        worst_median_tre_um=("truth_error_um_median", "max"), cpu_s=("cpu_s", "median"))
    overall = df.groupby("method", sort=False).agg(
        n=("case", "size"), median_tre_um=("truth_error_um_median", "median"),
        p90_tre_um=("truth_error_um_p90", "median"), median_tre_px=("tre_px", "median"),
        worst_median_tre_um=("truth_error_um_median", "max"), cpu_s=("cpu_s", "median"))
    pd.set_option("display.width", 160)
    print("\nPer geometry (median over cases of each case's median / p90 TRE):")
    print(summary.round(2).to_string())
    if "seed" in df and df["seed"].nunique() > 1:
        per_seed = df.groupby(["seed", "method"], sort=False).agg(
            n=("case", "size"), median_tre_um=("truth_error_um_median", "median"),
            median_tre_px=("tre_px", "median"), cases_le_half_px=("tre_px", lambda v: int((v <= 0.5).sum())))
        print("\nPer seed (draw of the cases):")
        print(per_seed.round(2).to_string())
    print("\nAll cases:")
    print(overall.round(2).to_string())
    print_in_capture(df)
    print_affine_offsets(df)
    sf = df[df["method"] == "spatialfuse"]
    if sf.empty:
        return
    print_uncertainty(sf)
    print(f"\nspatialfuse: median TRE <= 1/2 pixel in {(sf['tre_px'] <= 0.5).sum()}/{len(sf)} cases")
    # the flag checks ran only on the cases of full runs (not --fast; runs read back may mix)
    sf = sf[sf["align_cpu_s"].notna()] if "align_cpu_s" in sf else sf.iloc[:0]
    if sf.empty:
        _print_oracle(df[df["method"] == "spatialfuse"])
        return
    print(f"with the flags ({len(sf)} cases, run without --fast): "
          f"full align stage CPU median {sf['align_cpu_s'].median():.1f}s, max {sf['align_cpu_s'].max():.1f}s "
          f"(registration max {sf['cpu_s'].max():.1f}s); flagged {int(sf['flagged'].sum())}/{len(sf)}")
    bad = sf["truth_error_um_median"] > WRONG_UM
    fl = sf["flagged"].astype(bool)
    print(f"flag vs truth (wrong = median TRE > {WRONG_UM:.0f} um): {int((fl & bad).sum())}/{int(bad.sum())} "
          f"wrong registrations flagged (misses {int((~fl & bad).sum())}), false alarms "
          f"{int((fl & ~bad).sum())}/{int((~bad).sum())} correct ones; deliberately wrong placements "
          f"(rot 180, mirror, 300 um shift of each found transform) flagged "
          f"{int(sf['wrong_flagged'].sum())}/{int(sf['wrong_tried'].sum())}")
    off = sf["truth_error_um_median"] > OFF_UM
    print(f"registrations more than {OFF_UM:.0f} um (half a spot pitch) off: {int(off.sum())}, of them "
          f"flagged {int((fl & off).sum())}; flagged within {OFF_UM:.0f} um: {int((fl & ~off).sum())}")
    if fl.any():
        print("flagged cases:", ", ".join(f"{r.case} ({r.truth_error_um_median:.0f} um, similarity "
                                          f"{r.similarity:.2f}, placement margin {r.placement_margin:+.2f}, Dice {r.dice:.2f})"
                                          for r in sf[fl].itertuples()))
    _print_oracle(sf)
    big = sf[sf["pixel_um"] == 10.0]
    if len(big):
        print(f"10 um pixels ({int(big['msi_pixels'].median())} pixels): align CPU "
              f"{big['align_cpu_s'].median():.1f}s median")


def print_in_capture(df: pd.DataFrame) -> None:
    """The median TRE (in MSI pixels) over the tissue pixels whose true position lies in the ST
    capture area, where the registration has spots to go by and where pixels are paired with
    them, next to the TRE over all tissue pixels; per geometry, with the share of pixels
    outside (tissue cut at the capture edge), whose positions are extrapolated."""
    if "truth_error_um_median_in_capture" not in df or df["truth_error_um_median_in_capture"].isna().all():
        return
    d = df.assign(tre_in_px=df["truth_error_um_median_in_capture"] / df["pixel_um"])
    agg = dict(n=("tre_in_px", "count"),
               cases_outside=("truth_outside_capture_fraction",
                              lambda v: int((v >= OUTSIDE_CAPTURE_NOTE).sum())),
               outside_max=("truth_outside_capture_fraction", "max"),
               median_tre_px=("tre_px", "median"), in_capture_px=("tre_in_px", "median"),
               in_capture_le_half_px=("tre_in_px", lambda v: int((v <= 0.5).sum())))
    print("\nIn the capture area (median TRE over the tissue pixels whose true position lies in "
          f"it; cases_outside: cases with >= {OUTSIDE_CAPTURE_NOTE:.0%} of them outside (the "
          "share from which the stage's log and report say so), outside_max: the largest share):")
    print(d.groupby(["geometry", "method"], sort=False).agg(**agg).round(2).to_string())
    print(d.groupby("method", sort=False).agg(**agg).round(2).to_string())


def print_uncertainty(sf: pd.DataFrame) -> None:
    """The stage's own uncertainty estimate (qc.json ``affine_uncertainty_um``: the affine
    refitted on halves of the section) against what it should predict: the found affine's
    RMS distance from the truth's best affine over the tissue, and the whole median TRE (which
    a smooth warp adds to)."""
    if "affine_uncertainty_um" not in sf or sf["affine_uncertainty_um"].isna().all():
        return
    u = sf["affine_uncertainty_um"].astype(float)
    ratio = sf["offset_rms_um"] / u
    print(f"\nuncertainty estimate (affine refitted on halves): median {u.median():.1f} um "
          f"({u.min():.1f}-{u.max():.1f}); affine's distance from the truth's affine median "
          f"{sf['offset_rms_um'].median():.1f} um; rank correlation with it "
          f"{u.corr(sf['offset_rms_um'], method='spearman'):.2f}, with the median TRE "
          f"{u.corr(sf['truth_error_um_median'], method='spearman'):.2f}; distance / estimate "
          f"median {ratio.median():.2f} ({ratio.min():.2f}-{ratio.max():.2f}), within x2 in "
          f"{int(((ratio >= 0.5) & (ratio <= 2)).sum())}/{len(sf)} cases")


def print_affine_offsets(df: pd.DataFrame) -> None:
    """Each method's found affine against the truth's best affine, over the cases: the size of
    each part (median), and the mean ± standard error of the signed parts, to tell a bias
    shared by the cases (a mean several standard errors from 0) from case-by-case scatter."""
    if "offset_shift_um" not in df:
        return
    print("\nFound affine vs the truth's best affine (per case: shift at the tissue centroid, "
          "rotation, isotropic scale, anisotropy; MSI-axis components of the linear part):")
    for method, g in df.dropna(subset=["offset_shift_um"]).groupby("method", sort=False):
        def ms(col):
            v = g[col].to_numpy()
            return f"{v.mean():+.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f}" if len(v) > 1 else f"{v[0]:+.2f}"
        print(f"  {method} ({len(g)} cases): shift median {g['offset_shift_um'].median():.1f} um "
              f"(mean x {ms('offset_shift_x_um')}, y {ms('offset_shift_y_um')} um); rotation median "
              f"|{g['offset_rotation_deg'].abs().median():.2f}| deg (mean {ms('offset_rotation_deg')}); "
              f"scale mean {ms('offset_scale_pct')} %; anisotropy median "
              f"{g['offset_anisotropy_pct'].median():.2f} %; MSI axes xx {ms('offset_msi_xx_pct')}, "
              f"yy {ms('offset_msi_yy_pct')}, xy {ms('offset_msi_xy_pct')}, yx {ms('offset_msi_yx_pct')} %")


def _print_oracle(sf: pd.DataFrame) -> None:
    if "oracle_penalty" in sf:
        gain = sf["oracle_E_affine"] - sf["oracle_E_truth"]
        gain_in = sf["oracle_E_affine"] - sf["oracle_E_truth_raster_fit"]
        print(f"warp oracle (B-spline fitted to the true warp on the found affine): TRE median "
              f"{sf['oracle_tre_um'].median():.1f} um; data objective lower at the truth in "
              f"{int((gain > 0).sum())}/{len(sf)} cases; where it is, the penalty for the true "
              f"field is {np.median((sf['oracle_penalty'] / gain)[gain > 0]):.1f}x that gain (median; "
              f"{np.median((sf['oracle_penalty_raster'] / gain)[gain > 0]):.1f}x over the control points "
              f"whose support touches the MSI raster; "
              f"{np.median((sf['oracle_penalty_raster_fit'] / gain_in)[gain_in > 0]):.1f}x for the field "
              f"fitted to the truth on the raster only)"
              if (gain > 0).any() else "")


if __name__ == "__main__":
    main()
