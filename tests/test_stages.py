"""Impute, model, domains, interpret on the small demo: behaviour that could fail."""

import numpy as np
import pytest

from spatialfuse.align import run_align
from spatialfuse.constants import Key


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
    fitted scale, and the ST spots at their diameter; coverage is on a fixed 0-1 scale."""
    import anndata as ad
    import matplotlib
    import pandas as pd

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
    drawn = []
    real_scatter = matplotlib.axes.Axes.scatter

    def scatter(self, x, y, s=None, **kw):
        drawn.append((len(np.atleast_1d(x)), np.atleast_1d(s)[0], kw.get("label")))
        return real_scatter(self, x, y, s=s, **kw)

    matplotlib.axes.Axes.scatter = scatter
    try:
        stages.alignment_overlay_figure(st, msi, cov, qc, tmp_path / "o.png", "s",
                                        max_pixels=500)
    finally:
        matplotlib.axes.Axes.scatter = real_scatter
    assert (tmp_path / "o.png").stat().st_size > 0
    (n_px, s_px, _), (n_st, s_st, _) = drawn[0], drawn[1]
    assert n_px == 500 and n_st == 25
    # marker areas scale with the squared sizes: 30 um pixels, 100 um spots
    assert s_st / s_px == pytest.approx((100 / 30) ** 2, rel=1e-6)
