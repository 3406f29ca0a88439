"""Helpers of the registration benchmark (benchmarks/align_benchmark.py) that score peers and
explain the non-rigid step: point-wise TRE and the true-warp oracle."""

import sys

import numpy as np
import pandas as pd

from spatialfuse.align.stage import DEFAULTS, prepare_inputs, register
from spatialfuse.simulate import DemoParams, simulate_sample, simulated_sections

from conftest import REPO, SMALL_DEMO

sys.path.insert(0, str(REPO / "benchmarks"))
import align_benchmark as ab  # noqa: E402


def test_point_error_scores_predicted_positions_on_tissue_pixels_only():
    truth = pd.DataFrame({"x": [1, 2, 3, 4], "y": [1, 1, 1, 1],
                          "st_x_um": [0.0, 10.0, 20.0, 30.0], "st_y_um": [0.0, 0.0, 0.0, 0.0],
                          "tissue_fraction": [1.0, 1.0, 1.0, 0.2]})
    idx = np.array([[4, 1], [3, 1], [2, 1], [1, 1]])  # any order, matched by raster index
    pred = truth.set_index(["x", "y"]).loc[[tuple(r) for r in idx], ["st_x_um", "st_y_um"]].to_numpy()
    pred = pred + np.array([3.0, 4.0])
    pred[0] += 1000.0  # the mostly-empty pixel (tissue fraction 0.2) does not count
    e = ab.point_error(pred, idx, truth, pixel_um=10.0)
    assert e["truth_n_pixels"] == 3
    assert np.isclose(e["truth_error_um_median"], 5.0) and np.isclose(e["truth_error_pixels_median"], 0.5)


def test_warp_oracle_recovers_the_true_warp_and_prices_it():
    sim = simulate_sample(DemoParams(seed=3, **{**SMALL_DEMO, "warp_um": 40.0}))
    st, msi = simulated_sections(sim)
    inp = prepare_inputs(st, msi, DEFAULTS["feature_components"], 0)
    T, _ = register(inp, {"nonrigid": False})
    affine_tre = ab.tre_table_median(T, sim, inp)
    o = ab.warp_oracle(inp, sim, T.affine)
    # the B-spline on the true inverse map removes the warp the affine leaves ...
    assert o["oracle_tre_um"] < min(5.0, 0.3 * affine_tre)
    # ... and a 40 um warp costs the fit a positive bending/ridge penalty
    assert o["oracle_penalty"] > 0 and np.isfinite(o["oracle_E_affine"]) and np.isfinite(o["oracle_E_truth"])
    # over the control points that touch the MSI raster only: part of it, still positive
    assert 0 < o["oracle_penalty_raster"] < o["oracle_penalty"]
    assert 0 < o["oracle_penalty_raster_fit"] and np.isfinite(o["oracle_E_truth_raster_fit"])


def test_block_diagnostic_compares_local_shifts_with_the_true_displacement():
    sim = simulate_sample(DemoParams(seed=3, **{**SMALL_DEMO, "warp_um": 0.0, "msi_pixel_size_um": 20.0}))
    st, msi = simulated_sections(sim)
    inp = prepare_inputs(st, msi, 4, 0)
    t = sim["msi_pixels"]
    A = ab.fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    A[:2, 2] += np.array([-25.0, 10.0])  # a known error of the affine: true local shift (-25, 10)
    w = ab.block_diagnostic(inp, sim, A, "c", window_um=500.0, spacing_um=300.0, max_shift_um=40.0)
    assert len(w) >= 4 and (w["case"] == "c").all()
    assert np.allclose(w[["true_x", "true_y"]].median(), [-25.0, 10.0], atol=2.0)
    conf = w[w["curvature"] >= w["curvature"].median()]
    # single windows are noisy (spot-level data), their median recovers most of the shift
    miss = np.linalg.norm(conf[["est_x", "est_y"]].median().to_numpy() - [-25.0, 10.0])
    assert miss < 0.4 * np.hypot(25.0, 10.0)


def test_histology_diagnostic_outline_is_unbiased_and_cells_sit_where_the_image_does():
    """The diagnostic's image cells: a disc drawn into an image comes back as cells whose tissue
    fractions add up to the disc's area (a segmentation threshold near the background inflated
    every edge cell) and whose tissue centroid is the disc's centre (pixel/cell centres agree)."""
    import align_histology_diagnostic as hd

    um, r, centre = 5.0, 600.0, np.array([1012.0, 987.0])
    n = 400
    g = np.arange(n) * um  # pixel (row, col) centred at (col, row) * um, as ab.he_image draws
    xx, yy = np.meshgrid(g, g, indexing="xy")
    inside = np.hypot(xx - centre[0], yy - centre[1]) <= r
    img = np.full((n, n, 3), 0.96)
    img[inside] = [0.80, 0.50, 0.72]
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.05, img.shape), 0, 1)
    mask = hd.segment(img)
    box = np.array([0.0, 0.0, n * um, n * um])
    xy, frac, colour = hd.image_cells(img, mask, um, 25.0, box)
    area = frac.sum() * 25.0**2
    assert abs(area / (np.pi * r**2) - 1) < 0.01
    assert np.allclose((xy * frac[:, None]).sum(0) / frac.sum(), centre, atol=1.5)
    assert np.allclose(colour[frac == 1].mean(0), [0.80, 0.50, 0.72], atol=0.01)
    # a threshold near the background (the first version) inflates the outline
    c = 20
    bgc = np.median(np.concatenate([img[:c, :c], img[-c:, -c:]]).reshape(-1, 3), 0)
    from scipy import ndimage

    loose = ndimage.gaussian_filter(np.linalg.norm(img - bgc, axis=2), 1.0) > 0.15
    assert loose.sum() > mask.sum() * 1.005


def test_affine_offset_splits_a_known_error_into_its_parts():
    rng = np.random.default_rng(0)
    th = np.deg2rad(37.0)
    A_ref = np.array([[np.cos(th), -np.sin(th), 500.0], [np.sin(th), np.cos(th), -200.0], [0, 0, 1]])
    st_xy = rng.uniform(1000, 3000, (200, 2))
    c = st_xy.mean(0)
    # an error in the ST frame about the tissue centroid: 0.5 deg, +1 % scale, then a 6/-8 um shift
    a = np.deg2rad(0.5)
    L = 1.01 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    D = np.eye(3)
    D[:2, :2], D[:2, 2] = L, c - L @ c + np.array([6.0, -8.0])
    o = ab.affine_offset(D @ A_ref, A_ref, st_xy)
    assert np.isclose(o["offset_shift_x_um"], 6.0) and np.isclose(o["offset_shift_y_um"], -8.0)
    assert np.isclose(o["offset_shift_um"], 10.0)
    assert np.isclose(o["offset_rotation_deg"], 0.5) and np.isclose(o["offset_scale_pct"], 1.0)
    assert abs(o["offset_anisotropy_pct"]) < 1e-9
    # a stretch of the MSI raster's own x axis by 2 % shows as anisotropy and in its xx component only
    S = np.diag([1.02, 1.0, 1.0])
    o = ab.affine_offset(A_ref @ S, A_ref, st_xy)
    assert np.isclose(o["offset_msi_xx_pct"], 2.0) and np.isclose(o["offset_anisotropy_pct"], 2.0)
    assert np.allclose([o["offset_msi_yy_pct"], o["offset_msi_xy_pct"], o["offset_msi_yx_pct"]], 0.0, atol=1e-9)
    assert abs(o["offset_rotation_deg"]) < 1e-9


def test_summarise_pools_draws_and_counts_flags_only_where_they_ran(tmp_path, capsys):
    """Runs read back (``--summarise``): one table per draw and one over all cases; the flag
    counts cover only the cases of full runs (a --fast run has no flags), and a flagged case
    is named with its draw."""
    def run(n, px_err, flags):
        rows = []
        for i in range(n):
            for method, err in (("spatialfuse", px_err[i]), ("landmark-affine", 0.7),
                                ("best-affine (truth fit)", 0.4)):
                r = dict(case=f"blob-{i}", geometry="blob", method=method, pixel_um=20.0,
                         truth_error_um_median=20.0 * err, truth_error_um_p90=40.0, cpu_s=1.0)
                if flags is not None:  # a newer run: also the error in the capture area
                    r.update(truth_error_um_median_in_capture=20.0 * (err - 0.1),
                             truth_outside_capture_fraction=0.2)
                if flags is not None and method == "spatialfuse":
                    r.update(align_cpu_s=2.0, flagged=flags[i], wrong_flagged=3, wrong_tried=3,
                             similarity=0.5, placement_margin=0.1, dice=0.9)
                rows.append(r)
        return pd.DataFrame(rows)

    run(3, [0.2, 0.4, 0.6], None).to_csv(tmp_path / "fast.tsv", sep="\t", index=False)
    run(2, [0.3, 1.0], [False, True]).to_csv(tmp_path / "full.tsv", sep="\t", index=False)
    df = ab.main(["--summarise", str(tmp_path / "fast.tsv"), str(tmp_path / "full.tsv")])
    out = capsys.readouterr().out
    assert set(df["seed"]) == {"fast.tsv", "full.tsv"} and len(df) == 15
    assert "Per seed" in out
    # the ½-px count over all 5 cases (0.2, 0.3, 0.4 <= 0.5), the flags over the 2 full ones
    assert "median TRE <= 1/2 pixel in 3/5 cases" in out
    assert "with the flags (2 cases" in out and "flagged 1/2" in out
    assert "flagged cases: full.tsv:blob-1" in out
    # pooled: the median over the 5 cases of each case's error in pixels
    line = next(x for x in out.split("All cases:")[1].splitlines() if x.startswith("spatialfuse "))
    n, median_um, _, median_px = line.split()[1:5]
    assert int(n) == 5 and float(median_px) == 0.4 and float(median_um) == 8.0
    # in the capture area: over the cases whose run measured it (the full run's 2: 0.2, 0.9 px)
    cap = out.split("In the capture area")[1].split("Found affine")[0].splitlines()
    n, n_out, out_max, median_px, in_px, in_half = next(
        x for x in cap[::-1] if x.startswith("spatialfuse ")).split()[1:7]
    assert (int(n), int(n_out), float(out_max), float(in_px), int(in_half)) == (2, 2, 0.2, 0.55, 1)
