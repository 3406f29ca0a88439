"""Impute, model, domains, interpret on the small demo: behaviour that could fail."""

import numpy as np
import pytest

from spatialfuse.align import run_align
from spatialfuse.constants import Key

from conftest import drawn_collections, polygon_shapes


@pytest.fixture(scope="module")
def paired(small_ingested, small_demo_files):
    out = run_align(small_ingested["st"], small_ingested["msi"], {}, sample="s",
                    truth_dir=small_demo_files[2])
    return out["rna"], out["msi_spots"]


def test_impute_never_overwrites_and_scores_heldout(paired):
    from spatialfuse.impute import run_impute

    rna, msi = paired
    X0 = msi.X.copy()
    rna2, msi2, metrics, table = run_impute(rna, msi, {"n_blocks": 4, "models": [], "denoise_models": []},
                                            seed=0)
    assert (msi2.X != X0).nnz == 0
    assert Key.layers.imputed("ridge_from_rna") in msi2.layers
    assert metrics["cv"]["scheme"] == "spatial_blocks" and metrics["cv"]["n_blocks"] == 4
    # smoothing an MSI image predicts held-out spots better than chance
    assert metrics["denoise"]["msi"]["knn_smooth"]["median_pearson"] > 0.3
    assert metrics["denoise"]["msi"]["graph_smooth"]["median_pearson"] > 0.3


def test_blocks_are_contiguous():
    from spatialfuse.impute import spatial_blocks

    g = np.arange(0, 2000, 100.0)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    f = spatial_blocks(xy, 4, seed=0)
    # each block is compact: its spots lie much closer to their block centre than to the tissue centre
    spread = np.mean([np.linalg.norm(xy[f == b] - xy[f == b].mean(0), axis=1).mean() for b in range(4)])
    assert spread < 0.7 * np.linalg.norm(xy - xy.mean(0), axis=1).mean()


def test_pca_domains_recover_truth_and_are_deterministic(paired, small_demo_files):
    from spatialfuse.domains import domain_metrics, find_domains
    from spatialfuse.ingest import read_truth_domains
    from spatialfuse.models import run_model

    rna, msi = paired
    a = run_model("pca", rna, msi, {"n_comps": 10}, seed=0, device="cpu")
    b = run_model("pca", rna, msi, {"n_comps": 10}, seed=0, device="cpu")
    np.testing.assert_array_equal(a["embedding"], b["embedding"])
    xy = rna.obsm["spatial"]
    lab = find_domains(a["embedding"], xy, n_domains=4, seed=0)
    truth = read_truth_domains(small_demo_files[2], rna.obs_names)
    m = domain_metrics(lab, xy, truth)
    assert m["ari"] > 0.5
    lab_l = find_domains(a["embedding"], xy, method="leiden", n_domains=4, seed=0)
    assert len(np.unique(lab_l)) == 4


def test_interpret_outputs(paired, small_demo_files):
    from spatialfuse.interpret import run_interpret

    rna, msi = paired
    lab = np.asarray(rna.obsm["spatial"][:, 0] > np.median(rna.obsm["spatial"][:, 0]), int)
    out = run_interpret(rna, msi, lab, {"n_genes": 50}, truth_dir=small_demo_files[2])
    assert {"modality", "domain", "feature", "qval"} <= set(out["markers"].columns)
    assert out["associations"]["qval"].between(0, 1).all()
    assert "link_recovery" in out["summary"]


def test_alignment_overlay_draws_a_subset_of_many_pixels_at_their_size(tmp_path):
    """The overlay draws at most ``max_pixels`` MSI pixels, each as large as a pixel after the
    fitted scale (in µm, data units), and the ST spots at their diameter; coverage is on a
    fixed 0-1 scale."""
    import anndata as ad
    import pandas as pd
    from matplotlib.collections import EllipseCollection, PolyCollection

    from spatialfuse.plots import stages

    gx, gy = np.meshgrid(np.arange(60), np.arange(60))
    msi = ad.AnnData(np.zeros((3600, 1), np.float32))
    msi.obsm[Key.obsm.spatial] = np.c_[gx.ravel(), gy.ravel()] * 20.0
    msi.obs[Key.obs.on_tissue] = True
    st = ad.AnnData(np.zeros((25, 1), np.float32))
    sx, sy = np.meshgrid(np.arange(5), np.arange(5))
    st.obsm[Key.obsm.spatial] = np.c_[sx.ravel(), sy.ravel()] * 250.0 + 100
    cov = pd.DataFrame({Key.obs.coverage: np.ones(25)}, index=st.obs_names)
    qc = {"tissue_dice": 0.9, "spot_diameter_um": 100.0, "msi_pixel_size_um": 20.0,
          "transform": {"mean_scale": 1.5}}
    pixels, spots = drawn_collections(lambda: stages.alignment_overlay_figure(
        st, msi, cov, qc, tmp_path / "o.png", "s", max_pixels=500))[:2]
    assert (tmp_path / "o.png").stat().st_size > 0
    assert isinstance(pixels, PolyCollection) and isinstance(spots, EllipseCollection)
    # no native positions: squares of the pixel side × the fitted scale, 30 um
    shapes = polygon_shapes(pixels)
    assert len(shapes) == 500
    np.testing.assert_allclose(np.abs(shapes), 15.0, atol=1e-9)
    assert len(spots.get_offsets()) == 25
    np.testing.assert_allclose(spots.get_widths(), 100.0)


def test_spots_are_drawn_at_the_sections_own_size_and_shape(tmp_path):
    """Visium spots are 55 µm disks, Visium HD bins squares of their side: the spot geometry
    comes from the section's metadata, and the report's domain maps draw each sample's spots
    with it (a 16 µm bin section beside a Visium one)."""
    import pandas as pd
    from matplotlib.collections import EllipseCollection, PolyCollection

    from spatialfuse.plots import spot_geometry
    from spatialfuse.report import figures

    assert spot_geometry(None) == (55.0, False) and spot_geometry({}) == (55.0, False)
    assert spot_geometry({"spot_diameter_um": 16, "spot_shape": "square"}) == (16.0, True)
    assert spot_geometry({"spot_diameter_um": 100.0, "spot_shape": "disk"}) == (100.0, False)
    g = np.arange(6.0)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    spots = pd.concat([pd.DataFrame({"sample": "hd", "x_um": xy[:, 0] * 16, "y_um": xy[:, 1] * 16,
                                     "pca": (xy[:, 0] > 2).astype(int)}),
                       pd.DataFrame({"sample": "v", "x_um": xy[:, 0] * 100, "y_um": xy[:, 1] * 100,
                                     "pca": (xy[:, 1] > 2).astype(int)})], ignore_index=True)
    added = drawn_collections(lambda: figures.domains_figure(
        spots, ["hd", "v"], ["pca"], pd.DataFrame(columns=["sample", "stage", "metric", "model", "value"]),
        tmp_path / "d.png", {"hd": 16.0, "v": 55.0}, None, {"hd": True}))
    assert (tmp_path / "d.png").stat().st_size > 0
    hd, v = added[:2], added[2:]
    assert all(isinstance(c, PolyCollection) for c in hd) and sum(len(c.get_paths()) for c in hd) == 36
    for c in hd:
        np.testing.assert_allclose(np.abs(polygon_shapes(c)), 8.0, atol=1e-9)
    assert all(isinstance(c, EllipseCollection) for c in v)
    assert all(np.allclose(c.get_widths(), 55.0) for c in v)


def test_alignment_overlay_draws_rotated_rectangular_pixels_as_registered(tmp_path):
    """A raster of 20 × 40 µm pixels, mirrored, rotated 30° and scaled 1.5 by the registration,
    is drawn with each pixel as that parallelogram (30 × 60 µm, turned) centred on its aligned
    position, in µm, in the stage's overlay and in the report's cohort panel."""
    import anndata as ad
    import pandas as pd

    from spatialfuse.plots import aligned_pixel_corners, stages
    from spatialfuse.report import figures

    gx, gy = np.meshgrid(np.arange(40), np.arange(20))
    native = np.c_[gx.ravel() * 20.0, gy.ravel() * 40.0]
    t = np.deg2rad(30.0)
    L = 1.5 * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) @ np.diag([-1.0, 1.0])
    msi = ad.AnnData(np.zeros((len(native), 1), np.float32))
    msi.obsm[Key.obsm.spatial_native] = native
    msi.obsm[Key.obsm.spatial] = native @ L + [2000.0, 500.0]
    msi.obs[Key.obs.on_tissue] = True
    st = ad.AnnData(np.zeros((16, 1), np.float32))
    sx, sy = np.meshgrid(np.arange(4), np.arange(4))
    st.obsm[Key.obsm.spatial] = np.c_[sx.ravel(), sy.ravel()] * 300.0 + 1000
    cov = pd.DataFrame({Key.obs.coverage: np.ones(16)}, index=st.obs_names)
    qc = {"tissue_dice": 0.9, "spot_diameter_um": 100.0, "msi_pixel_size_um": np.sqrt(800.0),
          "msi_pixel_size_xy_um": [20.0, 40.0], "transform": {"mean_scale": 1.5}}
    expected = np.array([[-10.0, -20.0], [10.0, -20.0], [10.0, 20.0], [-10.0, 20.0]]) @ L
    corners = aligned_pixel_corners(qc, native, msi.obsm[Key.obsm.spatial])
    np.testing.assert_allclose(corners, expected, atol=1e-9)
    # the two long sides are 60 um, the short ones 30 um, at right angles
    sides = np.linalg.norm(np.diff(np.vstack([corners, corners[:1]]), axis=0), axis=1)
    np.testing.assert_allclose(sides, [30.0, 60.0, 30.0, 60.0], atol=1e-9)

    def draw():
        stages.alignment_overlay_figure(st, msi, cov, qc, tmp_path / "o.png", "s")
        figures.registration_figure(
            {"s": {"st_xy": st.obsm[Key.obsm.spatial], "msi_xy": msi.obsm[Key.obsm.spatial],
                   "spot_diameter_um": 100.0, "pixel_corners_um": corners}},
            {"s": qc}, tmp_path / "r.png")

    added = drawn_collections(draw)
    assert (tmp_path / "o.png").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0
    polygons = [c for c in added if type(c).__name__ == "PolyCollection"]
    assert len(polygons) == 2  # the stage's overlay, the cohort panel: the pixels
    for pixels in polygons:
        v = np.array([p.vertices[:4] for p in pixels.get_paths()])
        np.testing.assert_allclose(v.mean(1), msi.obsm[Key.obsm.spatial], atol=1e-6)
        np.testing.assert_allclose(polygon_shapes(pixels), np.broadcast_to(expected, v.shape),
                                   atol=1e-6)
