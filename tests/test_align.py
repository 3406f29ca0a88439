"""Registration and resolution matching: known transforms recovered, exact weights, QC."""

import numpy as np
import pandas as pd
import pytest
import yaml

from spatialfuse.align import (
    Transform,
    overlap_weights,
    register_landmarks,
    run_align,
    similarity_matrix,
)
from spatialfuse.align.aggregate import aggregate, polygon_box_area, polygon_disk_area
from spatialfuse.align.qc import truth_error_table
from spatialfuse.align.stage import DEFAULTS
from spatialfuse.align.transform import from_inverse_field
from spatialfuse.errors import AlignmentError
from spatialfuse.simulate import DemoParams, simulate_sample, simulated_sections

from conftest import REPO, SMALL_DEMO


def _sim_sections(**kw):
    sim = simulate_sample(DemoParams(**{**SMALL_DEMO, **kw}))
    st, msi = simulated_sections(sim)
    return sim, st, msi


def _tre_um(T, sim, msi) -> float:
    return truth_error_table(T, sim["msi_pixels"], msi.obs, sim["params"].msi_pixel_size_um)[
        "truth_error_um_median"]


def test_truth_error_in_the_capture_area_and_the_share_outside():
    """With the capture box, the error is also summarised over the pixels whose TRUE position
    lies in it (half of them here: 2 µm off) apart from those beyond it (40 µm off)."""
    xs, ys = np.arange(0.0, 200.0, 10.0), np.arange(0.0, 100.0, 10.0)
    X, Y = np.meshgrid(xs, ys)
    native = np.stack([X.ravel(), Y.ravel()], 1)
    inside = native[:, 0] < 100.0
    true_st = native + np.where(inside, 2.0, 40.0)[:, None] * np.array([0.0, 1.0])
    idx = np.round(native / 10.0).astype(int)
    truth = pd.DataFrame({"x": idx[:, 0], "y": idx[:, 1], "st_x_um": true_st[:, 0],
                          "st_y_um": true_st[:, 1], "tissue_fraction": 1.0})
    T = Transform(np.eye(3))
    e = truth_error_table(T, truth, truth[["x", "y"]], 10.0, capture_box=[-5.0, -50.0, 95.0, 300.0])
    assert np.isclose(e["truth_error_um_median"], 21.0) and e["truth_n_pixels"] == 200
    assert np.isclose(e["truth_error_um_median_in_capture"], 2.0) and e["truth_n_pixels_in_capture"] == 100
    assert np.isclose(e["truth_error_pixels_median_in_capture"], 0.2)
    assert np.isclose(e["truth_outside_capture_fraction"], 0.5)
    assert "truth_outside_capture_fraction" not in truth_error_table(T, truth, truth[["x", "y"]], 10.0)


def test_share_of_msi_tissue_placed_outside_the_capture_area():
    from types import SimpleNamespace

    from spatialfuse.align.stage import outside_capture_fraction

    native = np.stack(np.meshgrid(np.arange(0.0, 1000.0, 10.0), np.arange(0.0, 500.0, 10.0)), -1).reshape(-1, 2)
    on = native[:, 1] < 250.0  # tissue: the lower half
    inp = SimpleNamespace(native=native, on_tissue=on, capture_box=np.array([0.0, 0.0, 1000.0, 1000.0]))
    assert outside_capture_fraction(inp, Transform(np.eye(3))) == 0.0
    shift = np.eye(3)
    shift[0, 2] = 305.0  # 30 of the 100 columns move past x = 1000
    assert np.isclose(outside_capture_fraction(inp, Transform(shift)), 0.3)
    inp.on_tissue = np.zeros(len(native), bool)
    assert outside_capture_fraction(inp, Transform(shift)) == 0.0


# --- transforms ---------------------------------------------------------------------------------

def test_transform_roundtrip_and_inverse(tmp_path):
    A = similarity_matrix(37.0, 1.07, True, np.array([120.0, -40.0]))
    T = Transform(A)
    p = np.random.default_rng(0).uniform(0, 1000, (50, 2))
    np.testing.assert_allclose(T.inverse(T(p)), p, atol=1e-8)
    T.save(tmp_path / "t.json")
    T2 = Transform.load(tmp_path / "t.json")
    np.testing.assert_allclose(T2(p), T(p))
    d = T.decompose()
    assert d["reflect"] and abs(d["mean_scale"] - 1.07) < 1e-9
    assert abs(d["rotation_deg"] - 37.0) < 1e-6


def test_nonrigid_transform_has_a_consistent_inverse(tmp_path):
    """A fitted inverse field e gives the forward field d; T⁻¹(T(u)) = u within 1 µm, and the
    transform survives a JSON round trip."""
    A = similarity_matrix(120.0, 0.95, False, np.array([2000.0, 500.0]))

    def e(x):  # a smooth 40 µm field in the ST frame
        return 40.0 * np.stack([np.sin(x[:, 1] / 300.0), np.cos(x[:, 0] / 400.0)], 1)

    T = from_inverse_field(A, e, np.array([0.0, 0.0]), np.array([2000.0, 2000.0]), 25.0)
    x = np.random.default_rng(1).uniform(100, 1900, (200, 2))
    u = np.linalg.solve(A[:2, :2], (x + e(x) - A[:2, 2]).T).T  # the exact inverse
    np.testing.assert_allclose(T.inverse(x), u, atol=0.5)
    np.testing.assert_allclose(T(u), x, atol=1.0)
    assert T.inverse_consistency_um(u) < 1.0
    T.save(tmp_path / "t.json")
    np.testing.assert_allclose(Transform.load(tmp_path / "t.json")(u), T(u), atol=0.01)


# --- landmarks ----------------------------------------------------------------------------------

def test_landmarks_recover_affine_with_loo():
    rng = np.random.default_rng(1)
    A = similarity_matrix(200.0, 0.95, False, np.array([500.0, 300.0]))
    msi = rng.uniform(0, 2000, (8, 2))
    st = Transform(A)(msi) + rng.normal(0, 2.0, (8, 2))
    T, diag = register_landmarks(st, msi)
    assert np.abs(T.affine - A).max() < 0.05 * np.abs(A).max()
    assert diag["landmark_loo_error_um_median"] < 10


def test_tps_landmarks_follow_a_warp_that_affine_cannot():
    rng = np.random.default_rng(2)
    A = similarity_matrix(75.0, 1.05, True, np.array([1500.0, 200.0]))
    msi = rng.uniform(0, 2000, (30, 2))

    def truth(u):
        y = Transform(A)(u)
        return y + 40.0 * np.stack([np.sin(y[:, 1] / 500.0), np.sin(y[:, 0] / 600.0)], 1)

    st = truth(msi)
    _, d_aff = register_landmarks(st, msi, model="affine")
    T, d_tps = register_landmarks(st, msi, model="tps")
    assert d_tps["landmark_loo_error_um_median"] < 0.5 * d_aff["landmark_loo_error_um_median"]
    test = rng.uniform(300, 1700, (100, 2))
    assert np.median(np.linalg.norm(T(test) - truth(test), axis=1)) < 10.0


def test_too_few_landmarks_is_an_error():
    with pytest.raises(AlignmentError, match="at least 3 landmarks"):
        register_landmarks(np.zeros((2, 2)), np.zeros((2, 2)))


# --- exact partial-volume weights ---------------------------------------------------------------

def test_polygon_disk_area_matches_monte_carlo():
    """A rotated square pixel cut by a spot's rim: exact area vs a fine point count."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        c, s = rng.uniform(-30, 30, 2), rng.uniform(10, 40)
        R = similarity_matrix(rng.uniform(0, 360), 1.0, False, np.zeros(2))[:2, :2]
        sq = (np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * s) @ R.T + c
        exact = polygon_disk_area(sq[None], np.zeros((1, 2)), 27.5)[0]
        g = (np.arange(2000) + 0.5) / 2000 - 0.5
        uu, vv = np.meshgrid(g, g)
        pts = np.stack([uu.ravel(), vv.ravel()], 1) * s @ R.T + c
        mc = s * s * np.mean(np.linalg.norm(pts, axis=1) <= 27.5)
        assert exact == pytest.approx(mc, abs=0.002 * s * s + 0.05)


def test_weights_exact_area_disk():
    """A pixel wholly inside a spot contributes its whole area; pixels tiling the plane cover
    the spot's area exactly, also after a rotation."""
    spot = np.array([[0.0, 0.0]])
    px = 7.0
    g = np.arange(-63, 64, px)
    xx, yy = np.meshgrid(g, g)
    pix = np.stack([xx.ravel(), yy.ravel()], 1)
    W = overlap_weights(spot, 55.0, pix, px, Transform())
    centre = np.nonzero((pix == 0).all(1))[0][0]
    assert W[0, centre] == pytest.approx(px * px, rel=1e-9)
    assert W.sum() == pytest.approx(np.pi * 27.5**2, rel=1e-9)
    W2 = overlap_weights(spot, 55.0, pix, px, Transform(similarity_matrix(33.0, 1.0, True, np.zeros(2))))
    assert W2.sum() == pytest.approx(np.pi * 27.5**2, rel=1e-9)
    V, cov, n = aggregate(W, np.ones((len(pix), 1)), np.pi * 27.5**2)
    assert cov[0] == pytest.approx(1.0) and V[0, 0] == pytest.approx(1.0)
    assert n[0] == W.getrow(0).nnz


def test_weights_exact_area_hd_bins():
    """Visium HD: square bins tiling a region collect every (rotated, scaled) pixel's whole area,
    and each bin is covered exactly once."""
    b = 8.0
    g = np.arange(0, 200, b) + b / 2
    bx, by = np.meshgrid(g, g)
    bins = np.stack([bx.ravel(), by.ravel()], 1)
    px = 10.0
    pg = np.arange(60, 140, px)
    pxx, pyy = np.meshgrid(pg, pg)
    pix = np.stack([pxx.ravel(), pyy.ravel()], 1)
    c = np.array([100.0, 100.0])
    A = similarity_matrix(21.0, 1.1, False, np.zeros(2))
    A[:2, 2] = c - A[:2, :2] @ c
    W = overlap_weights(bins, b, pix, px, Transform(A), spot_shape="square")
    per_pixel = np.asarray(W.sum(0)).ravel()
    np.testing.assert_allclose(per_pixel, (1.1 * px) ** 2, rtol=1e-9)
    assert polygon_box_area(np.array([[[0, 0], [4, 0], [4, 4], [0, 4.0]]]), np.array([[2.0, 2.0]]),
                            np.array([[10.0, 10.0]]))[0] == pytest.approx(4.0)
    _, cov, _ = aggregate(W, np.ones((len(pix), 1)), b * b)
    inner = np.all(np.abs(bins - c) < 25, axis=1)
    np.testing.assert_allclose(cov[inner], 1.0, rtol=1e-9)


# --- automatic registration ---------------------------------------------------------------------

def test_rectangular_pixels_weigh_as_the_squares_they_are_made_of():
    """A 10 × 20 µm pixel is two 10 µm squares stacked along y: under any transform its exact
    overlap with each spot or bin is the sum of theirs, and its area is 200 µm² (scaled)."""
    rng = np.random.default_rng(4)
    centres = np.stack(np.meshgrid(np.arange(0, 200, 10.0), np.arange(0, 400, 20.0)), -1).reshape(-1, 2)
    halves = np.concatenate([centres - [0, 5.0], centres + [0, 5.0]])  # the two squares of each
    A = similarity_matrix(27.0, 1.05, True, np.array([40.0, -15.0]))
    spots = rng.uniform(-250, 450, (300, 2))
    for shape, size in (("disk", 55.0), ("square", 16.0)):
        W = overlap_weights(spots, size, centres, (10.0, 20.0), Transform(A), spot_shape=shape)
        Wh = overlap_weights(spots, size, halves, 10.0, Transform(A), spot_shape=shape)
        n = len(centres)
        np.testing.assert_allclose(W.toarray(), (Wh[:, :n] + Wh[:, n:]).toarray(), atol=1e-9)
    lo, hi = Transform(A)(centres).min(0) - 40, Transform(A)(centres).max(0) + 40
    bins = np.stack(np.meshgrid(np.arange(lo[0], hi[0], 16.0), np.arange(lo[1], hi[1], 16.0)),
                    -1).reshape(-1, 2)
    W = overlap_weights(bins, 16.0, centres, (10.0, 20.0), Transform(A), spot_shape="square")
    np.testing.assert_allclose(np.asarray(W.sum(0)).ravel(), 200.0 * 1.05**2, rtol=1e-9)


def test_rectangular_raster_images_match_the_square_one_they_resample():
    """The registration's MSI images of a raster of 10 × 20 µm pixels equal those of the same
    image on 10 µm squares (each pixel split in two), read at the same µm positions: the
    lattice, the binning and the blur follow each axis's own step."""
    from spatialfuse.align.features import MsiRaster, smooth_on_raster

    xs, ys = np.arange(0, 600, 10.0), np.arange(0, 800, 20.0)
    rect = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    disc = np.hypot(*(rect - [300, 400]).T) < 250
    feat = np.stack([np.sin(rect[:, 0] / 90.0), np.cos(rect[:, 1] / 140.0)], 1)
    sq = np.concatenate([rect - [0, 5.0], rect + [0, 5.0]])
    r = MsiRaster(rect, disc, feat, (10.0, 20.0))
    q = MsiRaster(sq, np.r_[disc, disc], np.r_[feat, feat], 10.0)
    assert r.shape == (40, 60) and q.shape == (80, 60)
    np.testing.assert_allclose(r.tissue_xy.mean(0), q.tissue_xy.mean(0), atol=1e-9)
    u = np.stack(np.meshgrid(np.arange(120, 480, 7.0), np.arange(150, 650, 9.0)), -1).reshape(-1, 2)
    for sigma in (25.0, 60.0):
        (vr, okr, gr), (vq, okq, gq) = r.level(sigma).sample(u), q.level(sigma).sample(u)
        np.testing.assert_allclose(vr, vq, atol=0.03)
        np.testing.assert_allclose(okr, okq, atol=0.03)
        np.testing.assert_allclose(gr, gq, atol=0.03 / sigma * 4)
    sm_r = smooth_on_raster(rect, feat, disc, (10.0, 20.0), 30.0)
    sm_q = smooth_on_raster(sq, np.r_[feat, feat], np.r_[disc, disc], 10.0, 30.0)
    np.testing.assert_allclose(sm_r, 0.5 * (sm_q[: len(rect)] + sm_q[len(rect):]), atol=0.02)


def test_rectangular_pixels_are_registered_from_the_files(tmp_path):
    """A simulated pair whose MSI raster has 40 × 80 µm pixels, written as imzML (both sizes
    stated) and Space Ranger files, ingested and registered: every pixel sits at its own step
    on each axis, and the automatic registration lands as close to the truth as with square
    pixels (the same section at 40 µm: no more than 10 µm further off; 18.9 against 26.0 µm
    when written)."""
    from spatialfuse.ingest import run_ingest
    from spatialfuse.simulate import write_demo_sample

    errs = {}
    for py in (None, 80.0):
        d = tmp_path / f"y{py}"
        sim = simulate_sample(DemoParams(seed=7, **{**SMALL_DEMO, "msi_pixel_size_y_um": py}))
        write_demo_sample(sim, d / "st", d / "m.imzML", d / "truth")
        out = run_ingest(d / "st", d / "m.imzML", {}, sample="R")
        msi = out["msi"]
        meta = msi.uns["spatialfuse"]
        assert meta["pixel_size_xy_um"] == [40.0, 40.0 if py is None else 80.0]
        np.testing.assert_allclose(msi.obsm["spatial"],
                                   msi.obs[["x", "y"]].to_numpy(float) * meta["pixel_size_xy_um"])
        res = run_align(out["st"], msi, {}, sample="R", truth_dir=d / "truth")
        qc = res["qc"]
        assert qc["msi_pixel_size_xy_um"] == meta["pixel_size_xy_um"]
        assert not qc["flagged"], qc["warnings"]
        errs[py] = qc["truth_error_um_median"]
        assert qc["truth_error_pixels_median"] == pytest.approx(
            errs[py] / np.sqrt(np.prod(meta["pixel_size_xy_um"])))
    assert errs[80.0] < 40.0 and errs[80.0] < errs[None] + 10.0, errs
    # the same file read as square pixels (a sheet value of 40 for both axes: the raster
    # squeezed to half its height): the affine fits are held within the searched scales, so the
    # registration ends at their edge and is flagged for it (the warning names the pixel size)
    out = run_ingest(d / "st", d / "m.imzML", {}, sample="R", pixel_size_um=40.0)
    qc = run_align(out["st"], out["msi"], {}, sample="R", truth_dir=d / "truth")["qc"]
    assert qc["flagged"] and any("msi_pixel_size_um" in w for w in qc["warnings"]), qc["warnings"]
    assert max(qc["transform"]["scale_x"], qc["transform"]["scale_y"]) <= 1.1 * 1.1 + 1e-9


def test_super_bins_at_the_capture_edge_count_only_their_part_inside():
    """Visium HD bins are pooled into super-bins for the fit. One that reaches beyond the
    capture area stands for its part inside (centre and expected bin count), so tissue cut at
    the capture edge reads as tissue up to that edge, not as a false partial edge; the
    registration's tolerances stay in µm (at least 100), not in super-bins."""
    from spatialfuse.align.features import st_points

    b, n = 16.0, 50  # 800 µm of bins, all under tissue
    r, c = np.divmod(np.arange(n * n), n)
    xy = np.c_[(c + 0.5) * b, (r + 0.5) * b]
    pts = st_points(xy, np.zeros((len(xy), 2)), np.r_[0.0, 0.0, n * b, n * b], spot_um=b,
                    spot_shape="square", max_points=300)
    assert pts.pitch_um == 48.0 and (n * b) % pts.pitch_um != 0  # the last super-bins stick out
    np.testing.assert_allclose(pts.tissue, 1.0)
    assert (pts.xy > 0).all() and (pts.xy < n * b).all()
    assert pts.has_features.all()
    assert pts.tolerance_um == 100.0


def test_pooled_squares_count_as_their_tissue_fraction():
    """Pooled Visium HD squares (``ingest.st.visium_hd_pool_um``) carry the fraction of their
    bins in tissue; the registration's tissue target is that fraction, not 1, so squares on the
    tissue's edge do not draw the outline outwards."""
    from spatialfuse.align.features import st_points

    b, n = 48.0, 20
    r, c = np.divmod(np.arange(n * n), n)
    xy = np.c_[(c + 0.5) * b, (r + 0.5) * b]
    frac = np.where(c == 0, 1 / 9, 1.0)
    box = np.r_[0.0, 0.0, n * b, n * b]
    pts = st_points(xy, np.zeros((len(xy), 2)), box, spot_um=b, spot_shape="square",
                    tissue_fraction=frac)
    assert pts.pitch_um == b and len(pts.xy) == n * n  # one point per square
    edge = pts.xy[:, 0] < b
    np.testing.assert_allclose(pts.tissue[edge], 1 / 9)
    np.testing.assert_allclose(pts.tissue[~edge], 1.0)
    plain = st_points(xy, np.zeros((len(xy), 2)), box, spot_um=b, spot_shape="square")
    np.testing.assert_allclose(plain.tissue, 1.0)


def test_automatic_registration_on_demo(small_ingested, small_demo_files):
    """The small demo (read from real formats, ~120 spots): sub-pixel median error, masks
    overlap, paired spots all covered, aligned pixels keep their native coordinates. (Accuracy
    at realistic sizes is the benchmark's job: on sections this small the median error varies
    between 0.5 and 0.65 px with the seed.)"""
    _, _, truth = small_demo_files
    out = run_align(small_ingested["st"], small_ingested["msi"], {}, sample="s", truth_dir=truth)
    qc = out["qc"]
    px = qc["msi_pixel_size_um"]
    assert qc["truth_error_um_median"] < 0.75 * px  # a wrong rotation gives 100s of µm
    assert qc["tissue_dice"] > 0.85 and not qc["flagged"] and qc["warnings"] == []
    assert qc["feature_similarity"] > qc["feature_similarity_null"]
    # how well the data pin the affine: its refits on halves of the section scatter by less
    # than a spot pitch (tens of µm on this small section), and the scatter is in qc.json
    unc = qc["affine_uncertainty"]
    assert unc["halves"] == 8 and len(unc["half_moved_um"]) == 8
    assert 0 < qc["affine_uncertainty_um"] < 100.0
    assert qc["affine_uncertainty_um"] == pytest.approx(np.sqrt(np.mean(np.square(unc["half_moved_um"]))))
    # the B-spline is kept only when it passes its cross-validation; when kept, its fitted
    # inverse must agree with the forward map
    assert "nonrigid_check" in qc
    # the final affine was restarted from the best similarity; on a whole section the restart
    # returns to the same minimum and is not taken
    rs = qc["similarity_restart"]
    assert not rs["accepted"] and rs["moved_um"] < 0.5 * 100.0
    assert ("inverse_consistency_um" in qc) == out["transform"].is_nonrigid
    assert qc.get("inverse_consistency_um", 0.0) < 1.0
    rna, msi = out["rna"], out["msi_spots"]
    assert list(rna.obs_names) == list(msi.obs_names)
    assert (msi.obs["msi_coverage"] >= 0.5).all()
    cov = out["coverage"]
    assert {"msi_coverage", "msi_n_pixels", "msi_low_coverage"} <= set(cov.columns)
    al = out["msi_aligned"]
    assert "spatial_native" in al.obsm and al.n_obs == small_ingested["msi"].n_obs
    T = out["transform"]
    np.testing.assert_allclose(T.inverse(al.obsm["spatial"]), al.obsm["spatial_native"], atol=1.0)


@pytest.mark.parametrize("rotation, reflect", [(300.0, True), (95.0, False)])
def test_full_circle_rotation_and_mirror_recovered(rotation, reflect):
    sim, st, msi = _sim_sections(seed=11, rotation_deg=rotation, reflect=reflect, warp_um=10.0)
    out = run_align(st, msi, {"nonrigid": False}, sample="rot")
    d = out["transform"].decompose()
    assert d["reflect"] == reflect
    assert abs((d["rotation_deg"] - rotation + 180) % 360 - 180) < 5.0
    assert _tre_um(out["transform"], sim, msi) < 0.75 * sim["params"].msi_pixel_size_um


def test_partial_overlap_tissue_cut_and_cropped_raster():
    """Tissue cut at the capture-area edge and an MSI raster cropped on one side. (On these tiny
    sections, ~100 spots, other seeds can fail: see the benchmark for the failure rate.)"""
    sim, st, msi = _sim_sections(seed=4, tissue_offset_frac=0.2, msi_crop_frac=0.2, warp_um=20.0)
    out = run_align(st, msi, {}, sample="cut")
    assert _tre_um(out["transform"], sim, msi) < 0.75 * sim["params"].msi_pixel_size_um
    assert out["qc"]["spots_low_coverage"] > 0  # spots beyond the cropped raster are flagged
    assert not out["coverage"]["msi_low_coverage"].all()


def test_tissue_beyond_the_capture_edge_is_measured_and_said(caplog):
    """A section whose tissue runs ~¼ past the capture edge: the share of the MSI tissue the
    registration places outside the capture area is the truth's, and the log says it."""
    sim, st, msi = _sim_sections(seed=11, tissue_offset_frac=0.2, msi_crop_frac=0.2, warp_um=20.0)
    with caplog.at_level("INFO", logger="spatialfuse.align.stage"):
        out = run_align(st, msi, {}, sample="cut")
    truth = truth_error_table(out["transform"], sim["msi_pixels"], msi.obs, sim["params"].msi_pixel_size_um,
                              capture_box=st.uns["spatialfuse"]["capture_box_um"])
    assert 0.15 < truth["truth_outside_capture_fraction"] < 0.3
    assert truth["truth_error_um_median_in_capture"] < 0.5 * sim["params"].msi_pixel_size_um
    assert abs(out["qc"]["msi_tissue_outside_capture"] - truth["truth_outside_capture_fraction"]) < 0.03
    assert any("outside the ST capture area" in r.getMessage() and "cut" in r.getMessage()
               for r in caplog.records)


def test_nonrigid_strength_is_configurable(small_ingested):
    st, msi = small_ingested["st"], small_ingested["msi"]
    free = {"nonrigid_validate": False}  # keep the field whatever the cross-validation says
    soft = run_align(st, msi, {"nonrigid_smoothness": 0.1, **free}, sample="s")["transform"]
    stiff = run_align(st, msi, {"nonrigid_smoothness": 100.0, **free}, sample="s")["transform"]
    rigid = run_align(st, msi, {"nonrigid": False}, sample="s")["transform"]
    assert rigid.displacement is None
    assert stiff.displacement.max_abs_um() < soft.displacement.max_abs_um()


def test_nonrigid_step_is_cross_validated(small_ingested):
    """By default the B-spline is fitted on one half of a checkerboard and judged on the other
    (both ways); it is kept only when it predicts both held-out halves better than the affine
    (by more than NONRIGID_MIN_GAIN), and the check is reported."""
    from spatialfuse.align.register import NONRIGID_MIN_GAIN

    st, msi = small_ingested["st"], small_ingested["msi"]
    out = run_align(st, msi, {"nonrigid_smoothness": 0.01}, sample="s")
    chk = out["qc"]["nonrigid_check"]
    assert len(chk["heldout_affine"]) == len(chk["heldout_nonrigid"]) == 2
    better = all((a - n) / a > NONRIGID_MIN_GAIN
                 for a, n in zip(chk["heldout_affine"], chk["heldout_nonrigid"]))
    assert chk["accepted"] == better
    assert (out["transform"].displacement is not None) == chk["accepted"]
    assert out["qc"]["method"] == ("auto_nonrigid" if better else "auto_affine")


def test_checkerboard_folds_split_the_area_evenly():
    from spatialfuse.align.register import checkerboard_folds

    g = np.stack(np.meshgrid(np.arange(0, 4000, 50.0), np.arange(0, 4000, 50.0)), -1).reshape(-1, 2)
    f = checkerboard_folds(g, 800.0)
    assert set(np.unique(f)) == {0, 1} and abs(f.mean() - 0.5) < 0.05
    # neighbours across a block edge fall in different folds, within a block in the same one
    assert checkerboard_folds(np.array([[790.0, 10.0], [810.0, 10.0]]), 800.0).tolist() == [0, 1]
    assert checkerboard_folds(np.array([[10.0, 10.0], [790.0, 790.0]]), 800.0).tolist() == [0, 0]


def test_final_fit_balances_mask_and_features_by_their_residuals():
    """The final fit weights each feature channel by the tissue mask's residual variance over
    its own (a likelihood's weighting): the noisy spot-level feature maps no longer outweigh the
    tissue outline, which the unbalanced objective let them do by ~100x."""
    from spatialfuse.align.refine import _affine_to_theta, _Objective
    from spatialfuse.align.stage import prepare_inputs
    from spatialfuse.align.transform import fit_affine

    sim, st, msi = _sim_sections(seed=3, warp_um=0.0)
    inp = prepare_inputs(st, msi, 4, 0)
    t = sim["msi_pixels"]
    A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    lev = inp.raster.level(inp.pts.footprint_sigma_um)
    th = _affine_to_theta(A)
    plain = _Objective(inp.pts, lev, 0.0, 1.0, None)
    plain.calibrate(th)
    bal = _Objective(inp.pts, lev, 0.0, 1.0, None, balance=True)
    bal.calibrate(th)
    assert bal.wf == pytest.approx(plain.pen_mask / plain.pen_feat)
    ev = bal.evaluate(th)
    mask_part = float((ev["v"] * ev["r0"] ** 2).sum())
    feat_part = ev["E"] - mask_part - float(((1 - ev["v"]) * bal.pen_mask).sum())
    # balanced: the feature channels together weigh about k x the mask (same per-channel
    # scale), not orders of magnitude more
    assert feat_part < 3 * bal.k * mask_part * len(bal.fi) / bal.n + 1e-9
    ev0 = plain.evaluate(th)
    feat0 = ev0["E"] - float((ev0["v"] * ev0["r0"] ** 2).sum()) - float(((1 - ev0["v"]) * plain.pen_mask).sum())
    assert feat0 > 10 * mask_part


def _warp_free_section_with_truth_affine(seed: int = 3):
    """A small warp-free simulated section: the simulation, the MSI, the registration inputs,
    the ST positions of its tissue pixels and the truth's least-squares affine onto them."""
    from spatialfuse.align.stage import prepare_inputs
    from spatialfuse.align.transform import fit_affine

    sim, st, msi = _sim_sections(seed=seed, warp_um=0.0)
    inp = prepare_inputs(st, msi, 4, 0)
    t = sim["msi_pixels"]
    t = t[t["tissue_fraction"] >= 0.5]
    dst = t[["st_x_um", "st_y_um"]].to_numpy()
    return sim, msi, inp, dst, fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), dst)


def test_affine_fit_keeps_the_scales_within_their_bounds():
    """refine(scale_bounds=(lo, hi)) keeps both scales of the affine inside the bounds when it
    starts inside them (the searched align.scales, widened, are the user's prior on the section's
    size: a partial outline, blurred, otherwise lets the affine grow along its missing side), and
    ignores bounds its start already breaks (a landmark start is trusted)."""
    from spatialfuse.align.refine import refine

    sim, msi, inp, dst, A = _warp_free_section_with_truth_affine()
    true_scale = Transform(A).decompose()["mean_scale"]
    assert 0.95 < true_scale < 1.05
    S = np.eye(3)  # the same placement shrunk to 85 % about the tissue's centre
    S[:2, :2] *= 0.85
    S[:2, 2] = 0.15 * dst.mean(0)
    levels = (160.0, 80.0, 40.0, 0.0)

    def scales(bounds):
        Af, _, _ = refine(inp.pts, inp.raster, S @ A, levels_um=levels, nonrigid=False,
                          scale_bounds=bounds)
        d = Transform(Af).decompose()
        return d["scale_y"], d["scale_x"]  # smaller, larger

    free = scales(None)
    assert free[0] > 0.92  # the data pull it back towards the true scale
    lo, hi = scales((0.8, 0.9))
    assert 0.8 <= lo and hi <= 0.9 + 1e-9
    assert hi > 0.89  # it goes as far towards the data as the bounds allow
    assert scales((0.6, 0.8)) == free  # a start outside the bounds: they are not applied


def test_similarity_fit_and_the_restart_from_it():
    """refine(similarity=True) fits rotation, one scale and shift only, from the similarity
    nearest its start (which pulls the ST tissue centroid to the same MSI point), mirrored or
    not; the registration's last affine fit is restarted from it and the better fit kept: an
    affine stretched 12 % along one axis and slid 80 µm is brought back to the minimum the
    truth's affine refines to, a fit already there is kept as it is; a landmark start is not
    restarted."""
    from spatialfuse.align.refine import (
        _affine_to_theta,
        _theta_to_affine,
        nearest_similarity,
        objective_at,
        refine,
    )
    from spatialfuse.align.register import _similarity_restart

    anchor = np.array([300.0, 200.0])
    for mirror in (False, True):
        A = similarity_matrix(37, 1.05, mirror, np.array([100.0, -50.0])) @ np.diag([1.12, 0.95, 1.0])
        M = _theta_to_affine(nearest_similarity(_affine_to_theta(A), anchor))
        d = Transform(M).decompose()
        assert d["reflect"] is mirror and d["scale_x"] == pytest.approx(d["scale_y"])
        assert d["rotation_deg"] == pytest.approx(37.0)
        np.testing.assert_allclose(np.linalg.solve(M, [*anchor, 1]), np.linalg.solve(A, [*anchor, 1]))

    sim, msi, inp, dst, A = _warp_free_section_with_truth_affine()
    c = dst.mean(0)
    W = np.eye(3)  # stretch 12 % along x about the tissue centre, then slide 80 µm along y
    W[0, 0] = 1.12
    W[:2, 2] = c - W[:2, :2] @ c + [0.0, 80.0]
    bad = W @ A
    assert _tre_um(Transform(bad), sim, msi) > 40
    S, _, _ = refine(inp.pts, inp.raster, bad, levels_um=(40.0, 0.0), nonrigid=False, similarity=True)
    d = Transform(S).decompose()
    assert d["scale_x"] == pytest.approx(d["scale_y"])
    assert _tre_um(Transform(S), sim, msi) < 15
    diag = {}
    Af = _similarity_restart(inp.pts, inp.raster, bad, (40.0, 0.0), 1.0, {}, diag)
    assert diag["similarity_restart"]["accepted"] and diag["similarity_restart"]["moved_um"] > 40
    assert objective_at(inp.pts, inp.raster, Af, 0.0, 1.0)["E_per_point"] < \
        objective_at(inp.pts, inp.raster, bad, 0.0, 1.0)["E_per_point"]
    # the affine fit started from the truth ends at the same minimum (17 µm from the truth at
    # this section's 40 µm pixels), and a restart from there stays put
    good, _, _ = refine(inp.pts, inp.raster, A, levels_um=(0.0,), nonrigid=False)
    assert _tre_um(Transform(Af), sim, msi) == pytest.approx(_tre_um(Transform(good), sim, msi), abs=1.0)
    diag = {}
    Ag = _similarity_restart(inp.pts, inp.raster, good, (40.0, 0.0), 1.0, {}, diag)
    assert diag["similarity_restart"]["moved_um"] < 1 and not diag["similarity_restart"]["accepted"]
    assert _tre_um(Transform(Ag), sim, msi) == pytest.approx(_tre_um(Transform(good), sim, msi), abs=1.0)
    # a start from landmarks is not restarted: its own check against the landmarks rules
    from spatialfuse.align.register import register_auto

    _, d_lm = register_auto(inp.pts, inp.raster, inp.capture_box, initial=bad, nonrigid=False)
    assert "similarity_restart" not in d_lm


def test_landmarks_reported_with_leave_one_out(small_ingested, small_demo_files):
    sim = simulate_sample(DemoParams(seed=7, n_landmarks=8, **SMALL_DEMO))
    lm = sim["landmarks"]
    out = run_align(small_ingested["st"], small_ingested["msi"], {"method": "landmarks"},
                    sample="s", landmarks=lm, truth_dir=small_demo_files[2])
    qc = out["qc"]
    assert qc["method"] == "landmarks_affine" and qc["n_landmarks"] == 8
    assert 0 < qc["landmark_loo_error_um_median"] < 60
    assert qc["truth_error_um_median"] < 60


def test_affine_uncertainty_is_seeded_and_switchable(small_ingested):
    """The half-sample refits draw their halves from the run's seed: the same seed gives the
    same number, another seed other halves; ``uncertainty_halves: 0`` and the methods that fit
    no affine to the images leave it out."""
    import dataclasses

    from spatialfuse.align.register import affine_uncertainty
    from spatialfuse.align.stage import prepare_inputs, register

    st, msi = small_ingested["st"], small_ingested["msi"]
    inp = prepare_inputs(st, msi, 8, 0)
    T, diag = register(inp, {"nonrigid": False})
    sigma = diag["levels_um"][-1]
    a = affine_uncertainty(inp.pts, inp.raster, T.affine, sigma, seed=1)
    b = affine_uncertainty(inp.pts, inp.raster, T.affine, sigma, seed=1)
    c = affine_uncertainty(inp.pts, inp.raster, T.affine, sigma, seed=2)
    assert a["half_moved_um"] == b["half_moved_um"] and a["half_moved_um"] != c["half_moved_um"]
    assert a["block_um"] == pytest.approx(4 * inp.pts.pitch_um) and a["blocks"] >= 4
    # squares as wide as the section: nothing to resample, said so instead of a number
    one = affine_uncertainty(dataclasses.replace(inp.pts, pitch_um=1e5), inp.raster, T.affine, sigma)
    assert one["affine_uncertainty_um"] is None and "too few" in one["reason"]
    off = run_align(st, msi, {"nonrigid": False, "uncertainty_halves": 0}, sample="s")["qc"]
    assert "affine_uncertainty_um" not in off
    ident = run_align(st, msi, {"method": "identity"}, sample="s")["qc"]
    assert "affine_uncertainty_um" not in ident


def test_poorly_determined_affine_is_flagged(small_ingested, monkeypatch, caplog):
    """An affine whose spread between halves of the section (a standard error) puts an error of
    a spot pitch within two standard errors flags the sample, loudly, like the other
    registration checks."""
    import spatialfuse.align.stage as stage
    from spatialfuse.align.stage import uncertainty_warning

    assert uncertainty_warning(None, 100.0) is None and uncertainty_warning(49.0, 100.0) is None
    # the pooled Visium HD section that slid 129 µm unflagged had a spread of 61 µm
    w = uncertainty_warning(61.0, 100.0)
    assert "poorly determined" in w and "122 um" in w and "100 um" in w
    assert uncertainty_warning(99.0, 200.0) is None  # legacy ST: a 200 µm pitch
    monkeypatch.setattr(stage, "affine_uncertainty",
                        lambda *a, **k: {"halves": 8, "affine_uncertainty_um": 250.0})
    with caplog.at_level("WARNING"):
        qc = run_align(small_ingested["st"], small_ingested["msi"], {"nonrigid": False},
                       sample="loose")["qc"]
    assert qc["flagged"] and any("poorly determined" in w for w in qc["warnings"])
    assert "REGISTRATION FLAGGED (loose)" in caplog.text and "250 um" in caplog.text


def test_wrong_registration_is_flagged(small_ingested, caplog):
    """Identity on a rotated section: low overlap, flagged loudly in the log and in qc.json."""
    with caplog.at_level("WARNING"):
        out = run_align(small_ingested["st"], small_ingested["msi"], {"method": "identity"},
                        sample="wrong")
    assert out["qc"]["flagged"] and out["qc"]["warnings"]
    assert "REGISTRATION FLAGGED (wrong)" in caplog.text


def test_flag_is_a_margin_over_wrong_placements():
    """A correct registration is not flagged for a modest similarity as long as it beats the
    deliberately wrong placements; one that does not beat them is, and so is a similarity under
    the absolute floor."""
    from spatialfuse.align.stage import registration_warnings

    p = dict(DEFAULTS)
    ok = {"tissue_dice": 0.99, "feature_similarity": 0.21, "feature_similarity_null": 0.17,
          "placement_score": 1.20, "best_wrong_placement": "shift +y", "best_wrong_placement_score": 1.15,
          "placement_margin": 0.05}
    assert registration_warnings(ok, p, 0.9) == []
    tie = dict(ok, best_wrong_placement_score=1.21, placement_margin=-0.01)
    assert any("deliberately wrong placement (shift +y)" in w for w in registration_warnings(tie, p, 0.9))
    low = dict(ok, feature_similarity=p["min_similarity"] / 2)
    assert any("agree poorly" in w for w in registration_warnings(low, p, 0.9))
    null = dict(ok, feature_similarity_null=0.22)  # no better than a rotated/mirrored copy
    assert any("deliberately wrong rotation/mirror" in w for w in registration_warnings(null, p, 0.9))
    stretched = dict(ok, transform={"scale_x": 1.28, "scale_y": 0.97})
    assert any("fitted scales" in w for w in registration_warnings(stretched, p, 0.9))
    assert registration_warnings(dict(ok, transform={"scale_x": 1.08, "scale_y": 0.93}), p, 0.9) == []
    held = dict(ok, transform={"scale_x": 1.21, "scale_y": 1.0})  # at the edge the fits stop at
    assert any("fitted scales (1.21 and 1.00) reach or leave" in w
               for w in registration_warnings(held, p, 0.9))


def test_deliberately_wrong_placements_are_flagged(small_ingested):
    """The found transform rotated by 180 degrees or mirrored about the tissue centre must be
    flagged by the same QC that passes the found one."""
    from spatialfuse.align.stage import assess_registration, prepare_inputs, register

    inp = prepare_inputs(small_ingested["st"], small_ingested["msi"], DEFAULTS["feature_components"], 0)
    from spatialfuse.align.qc import wrong_placements

    T, _ = register(inp, {"nonrigid": False}, sample="s")
    found = assess_registration(inp, T, {})
    assert not found["flagged"] and found["placement_margin"] > 0
    wrong = wrong_placements(T, T(inp.raster.tissue_xy).mean(0), 300.0)
    for name in ("rotate 180", "mirror", "shift +x", "shift -y"):
        q = assess_registration(inp, wrong[name], {})
        assert q["flagged"] and q["placement_margin"] < 0, name


def test_no_overlap_is_a_clear_error(small_ingested):
    msi = small_ingested["msi"].copy()
    msi.obsm["spatial"] = msi.obsm["spatial"] + 1e6  # far away; identity cannot overlap
    with pytest.raises(AlignmentError, match="no ST spot is covered"):
        run_align(small_ingested["st"], msi, {"method": "identity"}, sample="far")


def test_no_msi_tissue_is_a_clear_error(small_ingested):
    msi = small_ingested["msi"].copy()
    msi.obs["on_tissue"] = False
    with pytest.raises(AlignmentError, match="sample 'empty'.*tissue"):
        run_align(small_ingested["st"], msi, {}, sample="empty")


def test_defaults_match_the_config_schema():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["align"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == DEFAULTS


def test_msi_tissue_fraction_is_the_partial_volume_along_the_edge():
    """Pixels cut by the tissue edge get the covered fraction from their signal (relative to
    the on-tissue pixels around them, so regions of different ion yield do not matter); pixels
    inside are 1, outside 0."""
    from spatialfuse.align.features import msi_tissue_fraction

    px = 20.0
    jj, ii = np.mgrid[0:30, 0:30]
    xy = np.stack([ii.ravel(), jj.ravel()], 1) * px
    edge_x = 15.3 * px  # tissue left of x = 306 µm; pixel 15 spans 290-310 µm -> 80 % tissue
    cover = np.clip((edge_x - (xy[:, 0] - px / 2)) / px, 0, 1)
    yield_ = np.where(xy[:, 1] < 15 * px, 100.0, 400.0)  # two regions, 4x different ion yield
    signal = cover * yield_
    on = cover >= 0.5
    frac = msi_tissue_fraction(xy, on, signal, px)
    np.testing.assert_allclose(frac, cover, atol=1e-9)
    # the binary mask is what it was without a signal, and registration's input is unchanged
    np.testing.assert_array_equal(msi_tissue_fraction(xy, on, None, px), on.astype(float))
    # the row's tissue area (pixel 0 starts at -px/2) puts the edge where it is; the binary
    # mask (pixel 15 in) puts it 4 µm off
    assert abs(frac.reshape(30, 30)[0].sum() * px - px / 2 - edge_x) < 1e-6
    assert abs(on.reshape(30, 30)[0].sum() * px - px / 2 - edge_x) > 3.9


def test_refinement_that_contradicts_the_landmarks_falls_back_to_them():
    from spatialfuse.align.stage import _keep_landmark_agreement

    rng = np.random.default_rng(0)
    msi = rng.uniform(0, 3000, (8, 2))
    lm = pd.DataFrame({"msi_x_um": msi[:, 0], "msi_y_um": msi[:, 1],
                       "st_x_um": msi[:, 0] + 3.0, "st_y_um": msi[:, 1]})
    lm_T = Transform(np.eye(3), meta={"method": "landmarks_affine"})
    near = Transform(np.array([[1.0, 0, 3.0], [0, 1.0, 0], [0, 0, 1]]), meta={"method": "auto"})
    far = Transform(np.array([[-1.0, 0, 3000.0], [0, 1.0, 0], [0, 0, 1]]), meta={"method": "auto"})
    diag = {"landmark_loo_error_um_median": 12.0}
    assert _keep_landmark_agreement(near, lm_T, lm, diag, 100.0, "s") is near
    # 2 × 12 µm is below the floor, half a pitch
    assert diag["landmark_refinement"]["accepted"] and diag["landmark_refinement"]["tolerance_um"] == 50
    out = _keep_landmark_agreement(far, lm_T, lm, diag, 100.0, "s")
    assert out is lm_T and out.meta["refinement_rejected"]
    assert not diag["landmark_refinement"]["accepted"]
    assert diag["landmark_refinement"]["median_landmark_error_um"] > 100
    # a slide of 135 µm where the landmarks' own leave-one-out error is 60 µm: correct
    # refinements move them at most ~1.4 × that (benchmark), so 2.25 × is one that slid
    slid = Transform(np.array([[1.0, 0, 138.0], [0, 1.0, 0], [0, 0, 1]]), meta={"method": "auto"})
    d2 = {"landmark_loo_error_um_median": 60.0}
    assert _keep_landmark_agreement(slid, lm_T, lm, d2, 100.0, "s") is lm_T
    assert d2["landmark_refinement"]["tolerance_um"] == pytest.approx(120.0)
    assert _keep_landmark_agreement(slid, lm_T, lm, {"landmark_loo_error_um_median": 70.0}, 100.0,
                                    "s") is slid
    # on Visium HD bins (tolerance 100 µm): a 91 µm slide against a 39 µm leave-one-out error
    hd = Transform(np.array([[1.0, 0, 94.0], [0, 1.0, 0], [0, 0, 1]]), meta={"method": "auto"})
    assert _keep_landmark_agreement(hd, lm_T, lm, {"landmark_loo_error_um_median": 39.0}, 100.0,
                                    "s") is lm_T
    # within the landmarks' tolerance, but the images' two fits ended 91 µm apart: the images do
    # not settle the placement, the landmarks do
    d3 = {"landmark_loo_error_um_median": 70.0,
          "balanced_fit": {"moved_um": 91.0, "trust_um": 50.0, "accepted": False}}
    assert _keep_landmark_agreement(slid, lm_T, lm, d3, 100.0, "s") is lm_T
    assert d3["landmark_refinement"]["image_fits_agree"] is False
    d3["balanced_fit"]["accepted"] = True
    assert _keep_landmark_agreement(slid, lm_T, lm, d3, 100.0, "s") is slid


def test_two_placements_the_data_do_not_choose_between_are_flagged(small_ingested, monkeypatch,
                                                                    caplog):
    """The registration's own alternative fits ending more than half a pitch apart (the
    balanced refit rejected for it; the restart from the best similarity at about the same
    objective) flag the sample; alternatives near the kept fit, or far but clearly worse, do
    not."""
    import spatialfuse.align.stage as stage
    from spatialfuse.align.stage import alternative_fit_warning

    near = {"balanced_fit": {"moved_um": 43.0, "trust_um": 50.0, "accepted": True},
            "similarity_restart": {"moved_um": 0.5, "objective_affine": 0.07,
                                   "objective_restart": 0.07, "accepted": False}}
    assert alternative_fit_warning(near, 100.0) is None and alternative_fit_warning({}, 100.0) is None
    # quick benchmark, partial-1: a cut 3 mm section kept a fit 64 µm off; its balanced refit
    # had moved 91 µm
    w = alternative_fit_warning({**near, "balanced_fit": {"moved_um": 91.0, "accepted": False}}, 100.0)
    assert "poorly determined" in w and "91 um" in w and "50 um" in w
    # partial-4 on HD bins: the restart's minimum 57 µm away, 2.0 % lower (taken)
    hd = {"moved_um": 56.9, "objective_affine": 1.0, "objective_restart": 0.9799, "accepted": True}
    assert alternative_fit_warning({**near, "similarity_restart": hd}, 100.0)
    # partial-4 on square pixels: 66 µm away, 1.0 % lower (taken)
    tie = {"moved_um": 66.0, "objective_affine": 0.07101, "objective_restart": 0.07029,
           "accepted": True}
    w = alternative_fit_warning({**near, "similarity_restart": tie}, 100.0)
    assert "66 um" in w and "1.0%" in w
    assert alternative_fit_warning({**near, "similarity_restart": tie}, 200.0) is None  # legacy ST
    worse = dict(tie, objective_restart=0.07101 * 1.08, accepted=False)
    assert alternative_fit_warning({**near, "similarity_restart": worse}, 100.0) is None
    # in the stage: flagged loudly
    real = stage.register

    def two_fits(inp, p, **kw):
        T, d = real(inp, p, **kw)
        return T, {**d, "balanced_fit": {"moved_um": 91.0, "trust_um": 50.0, "accepted": False}}

    monkeypatch.setattr(stage, "register", two_fits)
    with caplog.at_level("WARNING"):
        qc = run_align(small_ingested["st"], small_ingested["msi"],
                       {"nonrigid": False, "uncertainty_halves": 0}, sample="two")["qc"]
    assert qc["flagged"] and any("two placements" in w for w in qc["warnings"])
    assert "REGISTRATION FLAGGED (two)" in caplog.text


# --- domain channels for the non-rigid step ------------------------------------------------------

def test_lda_posteriors_classify_from_a_few_labelled_rows():
    from spatialfuse.align.features import lda_posteriors

    rng = np.random.default_rng(1)
    mu = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    y = rng.integers(0, 3, 3000)
    X = mu[y] + rng.normal(0, 0.7, (3000, 3))
    P = lda_posteriors(X[:300], y[:300], X, 3)
    assert P.shape == (3000, 3) and np.allclose(P.sum(1), 1.0)
    assert (P.argmax(1) == y).mean() > 0.95
    # a class without enough training rows gets no mass
    assert lda_posteriors(X[:300], np.where(y[:300] == 2, 0, y[:300]), X, 3)[:, 2].max() == 0.0


def test_channel_groups_are_balanced_each_by_its_own_residual():
    """Balanced weights per channel group: a group of nearly noise-free channels (domain
    indicators) weighs more per channel than noisy components, each by the mask residual over
    its own residual variance; one group reproduces the former single weight."""
    from spatialfuse.align.features import StPoints
    from spatialfuse.align.refine import _affine_to_theta, _Objective
    from spatialfuse.align.register import heldout_weights
    from spatialfuse.align.stage import prepare_inputs
    from spatialfuse.align.transform import fit_affine

    sim, st, msi = _sim_sections(seed=3, warp_um=0.0)
    inp = prepare_inputs(st, msi, 4, 0, domain_clusters=0)
    t = sim["msi_pixels"]
    A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    lev = inp.raster.level(inp.pts.footprint_sigma_um)
    th = _affine_to_theta(A)
    one = _Objective(inp.pts, lev, 0.0, 1.0, None, balance=True)
    one.calibrate(th)
    np.testing.assert_allclose(one.wfc, one.wf)
    p = inp.pts
    grouped = StPoints(p.xy, p.tissue, p.features, p.has_features, p.pitch_um, p.footprint_sigma_um,
                       groups=np.array([0, 0, 1, 1]))
    two = _Objective(grouped, lev, 0.0, 1.0, None, balance=True)
    two.calibrate(th)
    for g in (0, 1):
        sel = two.groups == g
        assert np.allclose(two.wfc[sel], two.pen_mask / two.pen_feat_c[sel].mean())
    assert not np.allclose(two.wfc[:2], two.wfc[2:])
    fa = np.array([1.0, 3.0, 0.1, 0.3])
    np.testing.assert_allclose(heldout_weights(p, 0.2, fa, 1.0, True), 0.2 / fa.mean())
    np.testing.assert_allclose(heldout_weights(grouped, 0.2, fa, 1.0, True), [0.1, 0.1, 1.0, 1.0])


def test_domain_channels_are_seeded_and_feed_the_nonrigid_fit():
    """``align.domain_clusters``: the ST spots get one seeded domain label each (one-hot
    channels), the MSI pixels that domain's posterior for a given affine (values in [0, 1]),
    and the automatic registration runs its non-rigid step on them and still lands."""
    from spatialfuse.align.stage import prepare_inputs
    from spatialfuse.align.transform import fit_affine

    sim, st, msi = _sim_sections(seed=3, warp_um=0.0)
    f1 = prepare_inputs(st, msi, 4, 0, domain_clusters=4).fine
    f2 = prepare_inputs(st, msi, 4, 0, domain_clusters=4).fine
    assert prepare_inputs(st, msi, 4, 0, domain_clusters=0).fine is None
    np.testing.assert_array_equal(f1.labels, f2.labels)
    assert len(np.unique(f1.labels)) == 4
    t = sim["msi_pixels"]
    A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    pts, raster = f1.inputs(A)
    on = pts.has_features
    np.testing.assert_array_equal(pts.features[on].sum(1), 1.0)
    assert raster.k == 4
    vals = raster.feat_x_tissue
    assert np.nanmin(vals) >= -1e-9 and np.nanmax(vals) <= 1 + 1e-9 and np.nanmax(vals) > 0.5
    out = run_align(st, msi, {"domain_clusters": 4}, sample="dom")
    # 10.4 um (default channels: 13.3 um) on this 40 um-pixel pair
    assert _tre_um(out["transform"], sim, msi) < 0.5 * sim["params"].msi_pixel_size_um


def test_block_matching_finds_a_known_local_shift():
    """The exhaustive per-window search recovers a translation added to the true affine (no
    warp): the confident windows' shifts undo it."""
    from spatialfuse.align.blockmatch import local_shifts
    from spatialfuse.align.stage import prepare_inputs
    from spatialfuse.align.transform import fit_affine

    sim, st, msi = _sim_sections(seed=3, warp_um=0.0, msi_pixel_size_um=20.0)
    inp = prepare_inputs(st, msi, 4, 0)
    t = sim["msi_pixels"]
    A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    d0 = np.array([20.0, -15.0])
    A_off = A.copy()
    A_off[:2, 2] -= d0  # A_off⁻¹(x) = A⁻¹(x + d0): the fit's local shift must be -d0
    ls = local_shifts(inp.pts, inp.raster, A_off, inp.capture_box, window_um=500.0, spacing_um=300.0,
                      max_shift_um=40.0, step_um=5.0)
    assert len(ls.centre) >= 4 and ls.members.shape == (len(ls.centre), len(inp.pts.xy))
    conf = ls.curvature >= np.median(ls.curvature)
    assert np.allclose(np.median(ls.shift[conf], 0), -d0, atol=6.0)
    # the Hessian-weighted kernel average of all windows: the same shift everywhere
    from spatialfuse.align.blockmatch import smooth_shifts

    sm = smooth_shifts(ls, ls.centre, 1000.0)
    assert np.allclose(np.median(sm, 0), -d0, atol=6.0) and np.ptp(sm, 0).max() < 15.0
    # at the true affine the same windows find (nearly) no shift
    ls0 = local_shifts(inp.pts, inp.raster, A, inp.capture_box, window_um=500.0, spacing_um=300.0,
                       max_shift_um=40.0, step_um=5.0)
    assert np.all(np.abs(np.median(ls0.shift[ls0.curvature >= np.median(ls0.curvature)], 0)) < 6.0)


def test_bending_restricted_to_active_control_points():
    from spatialfuse.align.refine import BSplineField

    f = BSplineField.covering(np.zeros(2), np.array([1000.0, 1000.0]), 200.0)
    rng = np.random.default_rng(0)
    c = rng.normal(size=f.n)
    full = float(c @ (f.bending() @ c))
    assert np.isclose(float(c @ (f.bending(np.ones(f.n, bool)) @ c)), full)
    act = f.touching(np.array([[100.0, 100.0], [150.0, 120.0]]))
    assert 0 < act.sum() <= 16 + 4  # a corner point's 4 x 4 support (+ a cell boundary)
    part = float(c @ (f.bending(act) @ c))
    assert 0 < part < full
    c2 = c.copy()
    c2[~act] += 100.0  # values off the active points cost nothing there
    assert np.isclose(float(c2 @ (f.bending(act) @ c2)), part)


def _jittered_lattice(kind: str, pitch: float, n: int, jitter: float, angle_deg: float, seed: int = 0):
    """Spot centres of a tissue disc on a square or hexagonal lattice, rotated and jittered."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
    i, j = i.ravel().astype(float), j.ravel().astype(float)
    xy = (np.c_[i * pitch, j * pitch] if kind == "square"
          else np.c_[(i + 0.5 * j) * pitch, j * pitch * np.sqrt(3) / 2])
    t = np.radians(angle_deg)
    xy = xy @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T
    xy = xy[np.linalg.norm(xy, axis=1) < 0.8 * n * pitch]
    return xy + rng.normal(0, jitter, xy.shape)


@pytest.mark.parametrize("kind, pitch, jitter", [("square", 200.0, 15.0), ("hex", 100.0, 2.0)])
def test_lattice_inferred_from_spot_positions_alone(kind, pitch, jitter):
    """Spots detected on a jittered lattice without array coordinates (legacy ST) get integer
    lattice indices: neighbours one pitch apart differ by one step, no two spots share one."""
    from scipy.spatial import cKDTree

    from spatialfuse.align.features import infer_lattice

    xy = _jittered_lattice(kind, pitch, 9, jitter, 17.0)
    rows, cols = infer_lattice(xy, pitch)
    idx = np.c_[rows, cols]
    assert len(np.unique(idx, axis=0)) == len(xy)
    d, nb = cKDTree(xy).query(xy, k=2)
    step = np.abs(idx[nb[:, 1]] - idx).sum(1)
    assert np.all(step[d[:, 1] < 1.2 * pitch] <= 2)  # nearest neighbours are adjacent indices
    G = np.c_[cols, rows, np.ones(len(xy))]
    coef, *_ = np.linalg.lstsq(G, xy, rcond=None)
    assert np.abs(G @ coef - xy).max() < 6 * jitter  # the lattice explains every position
    rng = np.random.default_rng(1)
    scattered = rng.uniform(0, 20 * pitch, (400, 2))
    assert infer_lattice(scattered, pitch) is None


def test_background_points_of_a_legacy_st_section_are_its_empty_lattice_positions():
    """Without array coordinates the 'no tissue' points are the jittered lattice's empty
    positions: none closer to a tissue spot than about one pitch (the tissue edge lies up to a
    pitch beyond the outermost spots; 'no tissue' there pulled the MSI outline inwards and
    shrank the fitted scale by 4 % on average on the real legacy-ST sections)."""
    from scipy.spatial import cKDTree

    from spatialfuse.align.features import st_points

    pitch = 200.0
    xy = _jittered_lattice("square", pitch, 9, 15.0, 8.0)
    box = np.r_[xy.min(0) - 600, xy.max(0) + 600]
    pts = st_points(xy, np.zeros((len(xy), 0)), box, spot_um=100.0)
    bg = pts.xy[pts.tissue == 0]
    d, _ = cKDTree(xy).query(bg)
    assert len(bg) > 100 and d.min() > 0.8 * pitch
    # the first ring of empty positions is there, one pitch out (not only the box corners)
    assert np.sum(d < 1.25 * pitch) > 20
