"""Would the Space Ranger tissue image rescue the warp? A diagnostic, not part of the pipeline.

Visium folders ship an H&E image of the ST section (``tissue_hires_image.png``, ~3.5–4.5 µm/px).
The registration reads the ST section only at its spots (100 µm lattice). This script hands it
the section's image instead, rendered from the simulator's ST tissue at ``--um-per-px`` (tissue
pink, shaded by domain, per-pixel noise ``--noise``; an *idealised* H&E: its shades are a
perfect domain map, which real histology is not), segmented by its distance from the
background colour, and averaged into ``--cell`` µm cells:

* ``outline``: cells within ``--band`` µm of the tissue outline are added to the default
  observation points as tissue-fraction targets (no features);
* ``colour``: the cells replace the ST points altogether: tissue fraction + the image's leading
  colour principal component as the feature channel (the gene components are dropped).

For every case of ``align_benchmark.py`` (same seeds): median TRE of the default registration,
of each variant (with the default settings and ``--params`` overrides) and of the best affine.
``--drift CASE`` instead fits the B-spline on the ``colour`` points at the finest level from
the found affine *and from the true field* (the oracle's fit of it) at a few smoothness values,
and prints TRE, data objective and penalty: whether the data term's minimum is the truth.

    python benchmarks/align_histology_diagnostic.py --variants outline colour
    python benchmarks/align_histology_diagnostic.py --drift blob-3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import align_benchmark as ab  # noqa: E402

from spatialfuse.align.features import StPoints  # noqa: E402
from spatialfuse.align.stage import DEFAULTS, prepare_inputs, register  # noqa: E402
from spatialfuse.align.transform import Transform, fit_affine  # noqa: E402
from spatialfuse.simulate import DemoParams, simulate_sample, simulated_sections  # noqa: E402


def section_image(sim: dict, box: np.ndarray, um_per_px: float, noise: float,
                  seed: int) -> np.ndarray:
    """The benchmark's H&E-like image of the ST section, with Gaussian per-pixel noise."""
    img = ab.he_image(sim, float(max(box[2], box[3])), um_per_px)
    img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return np.clip(img, 0.0, 1.0)


def segment(img: np.ndarray) -> np.ndarray:
    """Tissue = pixels whose (lightly blurred) distance from the background colour (the median
    of the image corners) is above half the tissue's median distance: the half-way point of
    the edge, so the outline is not shifted (a threshold near the background, e.g. 0.15 of a
    0.54 step, moved it ~3 µm outwards, i.e. +0.12 tissue fraction in every 25 µm edge cell,
    and the fit bent the MSI outward to match it)."""
    c = 20
    corners = np.concatenate([img[:c, :c], img[:c, -c:], img[-c:, :c], img[-c:, -c:]])
    corners = corners.reshape(-1, 3)
    d = ndimage.gaussian_filter(np.linalg.norm(img - np.median(corners, 0), axis=2), 1.0)
    rough = d > 0.25 * np.percentile(d, 99)
    return d > 0.5 * float(np.median(d[rough]))


def image_cells(img: np.ndarray, mask: np.ndarray, um_per_px: float, cell_um: float,
                box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell centres (µm; pixel (r, c) is centred at (c, r) × ``um_per_px``), tissue fraction and
    mean tissue colour of square cells of ``cell_um`` inside the capture box."""
    f = max(1, int(round(cell_um / um_per_px)))
    ny, nx = img.shape[0] // f, img.shape[1] // f
    m = mask[: ny * f, : nx * f].reshape(ny, f, nx, f).astype(float)
    col = img[: ny * f, : nx * f].reshape(ny, f, nx, f, 3)
    frac = m.mean((1, 3))
    mean_col = (col * m[..., None]).sum((1, 3)) / np.maximum(m.sum((1, 3)), 1.0)[..., None]
    cy, cx = np.mgrid[0:ny, 0:nx]
    xy = np.stack([cx.ravel(), cy.ravel()], 1) * f * um_per_px + (f - 1) / 2 * um_per_px
    inside = ((xy[:, 0] > box[0]) & (xy[:, 0] < box[2]) & (xy[:, 1] > box[1])
              & (xy[:, 1] < box[3]))
    return xy[inside], frac.ravel()[inside], mean_col.reshape(-1, 3)[inside]


def outline_points(base: StPoints, xy, frac, band_um: float) -> StPoints:
    """``base`` plus the image cells within ``band_um`` of the outline (tissue targets only)."""
    from scipy.spatial import cKDTree

    tis, bg = xy[frac > 0.5], xy[frac <= 0.5]
    d_in = cKDTree(bg).query(xy)[0] if len(bg) else np.full(len(xy), np.inf)
    d_out = cKDTree(tis).query(xy)[0] if len(tis) else np.full(len(xy), np.inf)
    near = np.where(frac > 0.5, d_in, d_out) <= band_um  # distance to the other side
    k = base.features.shape[1]
    return StPoints(np.r_[base.xy, xy[near]], np.r_[base.tissue, frac[near]],
                    np.r_[base.features, np.zeros((near.sum(), k))],
                    np.r_[base.has_features, np.zeros(near.sum(), bool)],
                    base.pitch_um, base.footprint_sigma_um, base.groups)


#: colour components used as features (the simulated shades vary along one colour direction;
#: a second component is pure noise)
N_COLOUR = 1


def colour_points(base: StPoints, xy, frac, colour, cell_um: float) -> StPoints:
    """The image cells alone: tissue fraction + the leading :data:`N_COLOUR` colour components
    of the tissue cells (standardised) as features; the spot pitch is kept for the pyramid."""
    has = frac > 0.5
    C = colour - colour[has].mean(0)
    _, _, Vt = np.linalg.svd(C[has], full_matrices=False)
    P = C @ Vt[:N_COLOUR].T
    P = np.where(has[:, None], P / (P[has].std(0) + 1e-12), 0.0)
    return StPoints(xy, frac, P, has, base.pitch_um, cell_um / np.sqrt(12))


def case_inputs(c: dict):
    kw = {k: v for k, v in c.items() if k not in ("name", "geometry", "seed")}
    p = DemoParams(seed=c["seed"], n_genes=300, n_metabolites=60, n_links=12, **kw)
    sim = simulate_sample(p)
    st, msi = simulated_sections(sim)
    inp = prepare_inputs(st, msi, int(DEFAULTS["feature_components"]), 0, 0, 0.0)
    return p, sim, msi, inp


def variant_points(name: str, inp, sim, c: dict, args) -> StPoints:
    img = section_image(sim, inp.capture_box, args.um_per_px, args.noise, c["seed"])
    xy, frac, colour = image_cells(img, segment(img), args.um_per_px, args.cell, inp.capture_box)
    if name == "outline":
        return outline_points(inp.pts, xy, frac, args.band)
    return colour_points(inp.pts, xy, frac, colour, args.cell)


def tre_um(T, sim, msi) -> float:
    return round(float(ab.tre(T, sim, msi)["truth_error_um_median"]), 1)


def compare(args) -> None:
    rows = []
    params = json.loads(args.params)
    for c in ab.cases(args.quick, args.seed):
        if args.only and not c["name"].startswith(args.only):
            continue
        p, sim, msi, inp = case_inputs(c)
        base = inp.pts
        row = dict(case=c["name"], pixel_um=p.msi_pixel_size_um, warp_um=round(p.warp_um, 1))
        for name in ("default", *args.variants):
            inp.pts = base if name == "default" else variant_points(name, inp, sim, c, args)
            t0 = time.process_time()
            T, _ = register(inp, {} if name == "default" else params, sample=c["name"])
            row[name] = tre_um(T, sim, msi)
            row[f"{name}_method"] = T.meta["method"]
            row[f"{name}_cpu_s"] = round(time.process_time() - t0, 1)
        t = sim["msi_pixels"][sim["msi_pixels"]["tissue_fraction"] >= 0.5]
        A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
        row["best_affine"] = tre_um(Transform(A, meta={}), sim, msi)
        print(json.dumps(row), flush=True)
        rows.append(row)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False))
    for col in ("default", *args.variants, "best_affine"):
        px = df[col] / df["pixel_um"]
        print(f"{col}: median TRE {df[col].median():.1f} um, median TRE/px {px.median():.2f}, "
              f"cases <= 1/2 px {int((px <= 0.5).sum())}/{len(df)}")


def drift(args) -> None:
    """The B-spline on the colour points from the found affine and from the true field."""
    import scipy.sparse as sp

    from spatialfuse.align.refine import _RIDGE, _lm, _theta_to_affine
    from spatialfuse.align.register import transform_from_fit

    c = next(c for c in ab.cases(args.quick, args.seed) if c["name"] == args.drift)
    p, sim, msi, inp = case_inputs(c)
    pts = inp.pts = variant_points("colour", inp, sim, c, args)
    if args.true_msi:  # the MSI side as the simulator knows it: true tissue fraction and domain
        from spatialfuse.align.features import MsiRaster

        truth = sim["msi_pixels"].set_index(["x", "y"]).reindex(
            pd.MultiIndex.from_arrays([msi.obs["x"].to_numpy(), msi.obs["y"].to_numpy()]))
        dom = truth["domain"].to_numpy()
        onehot = (dom[:, None] == np.arange(max(dom.max(), 0) + 1)[None]).astype(float)
        frac = truth["tissue_fraction"].to_numpy()
        inp.raster = MsiRaster(inp.native, frac > 0, onehot, inp.pixel_um, tissue_fraction=frac)
        print("MSI side replaced by the truth: tissue fraction and one-hot domain per pixel")
    T1, _ = register(inp, {"nonrigid": False}, sample=c["name"])
    A = T1.affine
    print(f"{c['name']}: affine on the colour points {tre_um(T1, sim, msi)} um")
    t = ab.truth_on_bspline(pts, inp.raster, sim, A, inp.capture_box,
                            float(DEFAULTS["nonrigid_spacing_um"]), args.st_blur,
                            args.feature_weight)
    field, obj, th0, th1, ev, h = t.field, t.obj, t.th0, t.th1, t.ev0, t.h
    print(f"data objective: affine {ev['E']:.1f}, true field {obj.evaluate(th1)['E']:.1f} "
          f"(its TRE {tre_um(transform_from_fit(A, field, {'method': 'truth'}), sim, msi)} um)")
    for s in args.smoothness:
        Rc = s * h * field.bending() + _RIDGE * h * sp.identity(field.n)
        reg = sp.block_diag([Rc, Rc]).tocsr()
        pen_true = float(th1[6:] @ (reg @ th1[6:]))
        for start, th in (("affine", th0), ("true field", th1)):
            thf, info = _lm(obj, th.copy(), nonrigid=True, reg=reg, max_iter=100)
            field.coef = thf[6:].reshape(2, -1).T.copy()
            T = transform_from_fit(_theta_to_affine(thf), field, {"method": "fit"})
            pen = float(thf[6:] @ (reg @ thf[6:]))
            print(f"smoothness {s:g}, from the {start}: TRE {tre_um(T, sim, msi)} um, data "
                  f"objective {obj.evaluate(thf)['E']:.1f}, penalty {pen:.1f} (true field's "
                  f"penalty {pen_true:.1f}), {info['iterations']} iterations", flush=True)
            if args.parts:
                for lab, th_ in (("true", th1), ("fit", thf)):
                    ev_ = obj.evaluate(th_)
                    v = ev_["v"]
                    mask_e = float((v * ev_["r0"] ** 2).sum())
                    print(f"   {lab}: mask part {mask_e:.1f}, rest {ev_['E'] - mask_e:.1f}, "
                          f"feature R2 {ev_.get('r2', float('nan')):.3f}, "
                          f"valid points {v.sum():.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["outline", "colour"],
                    choices=["outline", "colour"])
    ap.add_argument("--params", default="{}", help="align overrides for the variants (JSON)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="cases whose name starts with this")
    ap.add_argument("--um-per-px", type=float, default=5.0, help="the image's resolution")
    ap.add_argument("--noise", type=float, default=0.05, help="per-pixel colour noise (sd)")
    ap.add_argument("--cell", type=float, default=25.0, help="observation cell size (µm)")
    ap.add_argument("--band", type=float, default=200.0, help="outline band half-width (µm)")
    ap.add_argument("--drift", default=None, metavar="CASE")
    ap.add_argument("--smoothness", type=float, nargs="+", default=[0.01, 0.001])
    ap.add_argument("--parts", action="store_true", help="with --drift: mask/feature split")
    ap.add_argument("--feature-weight", type=float, default=1.0,
                    help="with --drift: feature channels × this against the tissue mask")
    ap.add_argument("--st-blur", type=float, default=0.0,
                    help="with --drift: extra Gaussian blur (µm) of the ST side only")
    ap.add_argument("--true-msi", action="store_true",
                    help="with --drift: the MSI raster's tissue and features from the truth")
    args = ap.parse_args(argv)
    drift(args) if args.drift else compare(args)


if __name__ == "__main__":
    main()
