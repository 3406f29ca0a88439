"""Registration and resolution matching: known transforms recovered, exact weights, QC."""

import numpy as np
import pytest

from spatialfuse.align import (
    Transform,
    overlap_weights,
    register_landmarks,
    run_align,
    similarity_matrix,
)
from spatialfuse.align.aggregate import aggregate
from spatialfuse.errors import AlignmentError


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


def test_landmarks_recover_affine_with_loo():
    rng = np.random.default_rng(1)
    A = similarity_matrix(200.0, 0.95, False, np.array([500.0, 300.0]))
    msi = rng.uniform(0, 2000, (8, 2))
    st = Transform(A)(msi) + rng.normal(0, 2.0, (8, 2))
    T, diag = register_landmarks(st, msi)
    assert np.abs(T.affine - A).max() < 0.05 * np.abs(A).max()
    assert diag["landmark_loo_error_um_median"] < 10


def test_weights_exact_area():
    """A pixel wholly inside a spot contributes its whole area; coverage of a spot tiled by
    small pixels is ~1."""
    spot = np.array([[0.0, 0.0]])
    px = 5.0
    g = np.arange(-40, 41, px)
    xx, yy = np.meshgrid(g, g)
    pix = np.stack([xx.ravel(), yy.ravel()], 1)
    W = overlap_weights(spot, 55.0, pix, px, Transform(), subcell_um=0.5)
    centre = np.nonzero((pix == 0).all(1))[0][0]
    assert W[0, centre] == pytest.approx(px * px, rel=1e-6)
    assert W.sum() == pytest.approx(np.pi * 27.5**2, rel=0.01)
    V, cov, n = aggregate(W, np.ones((len(pix), 1)), np.pi * 27.5**2)
    assert cov[0] == pytest.approx(1.0, abs=0.01) and V[0, 0] == pytest.approx(1.0)


def test_automatic_registration_on_demo(small_ingested, small_demo_files):
    _, _, truth = small_demo_files
    out = run_align(small_ingested["st"], small_ingested["msi"], {}, sample="s", truth_dir=truth)
    qc = out["qc"]
    px = qc["msi_pixel_size_um"]
    # affine baseline under a 30 µm non-rigid warp: within 1.5 pixels (a wrong rotation gives 100s)
    assert qc["truth_error_um_median"] < 1.5 * px
    assert qc["tissue_dice"] > 0.85 and not qc["flagged"]
    rna, msi = out["rna"], out["msi_spots"]
    assert list(rna.obs_names) == list(msi.obs_names)
    assert (msi.obs["msi_coverage"] >= 0.5).all()
    # every aligned pixel keeps its native coordinates
    al = out["msi_aligned"]
    assert "spatial_native" in al.obsm and al.n_obs == small_ingested["msi"].n_obs


def test_no_overlap_is_a_clear_error(small_ingested):
    msi = small_ingested["msi"].copy()
    msi.obsm["spatial"] = msi.obsm["spatial"] + 1e6  # far away; identity cannot overlap
    with pytest.raises(AlignmentError, match="no ST spot is covered"):
        run_align(small_ingested["st"], msi, {"method": "identity"}, sample="far")
