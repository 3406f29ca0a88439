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
