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
