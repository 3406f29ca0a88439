"""Aggregation and the summary report: domain matching, robust metric collection, flags first,
a self-contained page, cohort figures, captions for every ``report()`` output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from report_tree import PERMUTATIONS, make_report

from spatialfuse.report import ResultsTree, collect_flags, collect_metrics, match_labels
from spatialfuse.report.domains import domain_profiles, match_profiles


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return make_report(root, conditions={"a": "control", "b": "treated"})


def test_match_labels_recovers_a_permutation_and_keeps_extra_labels_apart():
    truth = np.repeat([0, 1, 2], 50)
    pred = np.repeat([7, 3, 5], 50)
    pred[:5] = 9  # a small extra cluster inside truth domain 0
    m = match_labels(pred, truth)
    assert m[7] == 0 and m[3] == 1 and m[5] == 2
    assert m[9] == 3  # a fresh id, not another domain's colour
    # spots outside the tissue in a truth table (-1) are ignored
    truth_out = truth.copy()
    truth_out[-20:] = -1
    assert match_labels(pred, truth_out)[5] == 2


def test_match_profiles_pairs_domains_by_expression():
    rng = np.random.default_rng(0)
    centroids = rng.normal(0, 1, (4, 30))
    lab_a, lab_b = rng.integers(0, 4, 400), rng.integers(0, 4, 300)
    perm = np.array([2, 3, 0, 1])  # sample b numbers programme k as perm[k]
    Xa = centroids[lab_a] + rng.normal(0, 0.3, (400, 30))
    Xb = centroids[lab_b] + rng.normal(0, 0.3, (300, 30))
    genes = [f"g{i}" for i in range(30)]
    pa = domain_profiles(Xa, lab_a, genes)
    pb = domain_profiles(Xb[:, ::-1], perm[lab_b], genes[::-1])  # column order must not matter
    m = match_profiles(pb, pa)
    assert all(m[perm[k]] == k for k in range(4))


def test_collect_metrics_and_flags_tolerate_any_new_key(tmp_path):
    tree = ResultsTree(tmp_path)
    q = tree.path("align_qc", "s1")
    q.parent.mkdir(parents=True)
    q.write_text(json.dumps({"tissue_dice": 0.4, "flagged": True, "warnings": ["poor overlap"],
                             "new": {"deep": {"value": 2}}, "note": "text", "list": [1, 2],
                             "missing": None}))
    m = collect_metrics(tree, ["s1"], ["vae"])  # other stages' files absent: skipped
    got = dict(zip(m["metric"], m["value"]))
    assert got == {"tissue_dice": 0.4, "flagged": 1.0, "new.deep.value": 2.0}
    f = collect_flags(tree, ["s1"], ["vae"])
    assert list(f["message"]) == ["poor overlap"] and f["stage"].iloc[0] == "align"


def test_domain_colours_correspond_across_models_and_samples(cohort):
    """Every model of every sample is renumbered onto the same domain programme: sample a via
    its truth, sample b (no truth) via its expression profiles."""
    spots = pd.read_csv(cohort["outputs"]["spots"], sep="\t")
    for s, perms in PERMUTATIONS.items():
        sub = spots[spots["sample"] == s].set_index("barcode")
        prog = cohort["info"]["programme"][s].loc[sub.index]
        for m in perms:
            assert (sub[m].to_numpy() == prog.to_numpy()).all(), (s, m)
    assert sub["truth"].isna().all()  # b has no truth
    match = pd.read_csv(cohort["outputs"]["matching"], sep="\t")
    assert set(match["model"]) == {"pca", "vae"} and (match["n_spots"] > 0).all()


def test_cohort_tables_and_figures(cohort):
    out = cohort["outputs"]
    for k, p in out.items():
        assert Path(p).exists() and Path(p).stat().st_size > 0, k
    m = pd.read_csv(out["metrics"], sep="\t")
    assert {"ingest", "align", "impute", "model", "domains", "interpret"} <= set(m["stage"])
    assert set(m.loc[m["stage"] == "model", "model"]) == {"pca", "vae"}
    assert "new_key_from_align.nested" in set(m["metric"])
    links = pd.read_csv(out["links"], sep="\t")
    assert {"r:a", "q:a", "r:b", "q:b", "n_samples_significant"} <= set(links.columns)
    assert links["n_samples_significant"].iloc[0] == 2  # the planted link, significant in both
    pw = pd.read_csv(out["pathways"], sep="\t")
    assert set(pw["sample"]) == {"a", "b"} and pw["qval"].is_monotonic_increasing
    # each sample's verdict (VAE over ridge by exactly 0.03 on every metabolite) pooled
    pv = pd.read_csv(out["prediction"], sep="\t")
    (row,) = pv[(pv["comparison"] == "model_vs_baselines") & (pv["score"] == "pooled")].itertuples()
    assert (row.task, row.samples, row.method, row.comparator) == ("rna_to_msi", 2, "vae (2)",
                                                                   "ridge (2)")
    assert np.isclose(row.difference, 0.03) and row.verdict == "better"
    assert row.sample_verdicts == "better (2)"
    # the VAE's training curves give a real figure, not the "no curves" placeholder
    from PIL import Image

    w, h = Image.open(out["training_figure"]).size
    assert w > 300 and h > 200


def test_imputation_figure_shows_a_crossmodal_method_and_every_methods_median(cohort):
    """The per-sample panel is a genes -> metabolites method (the best one), never a denoising
    method that scored higher because it read the metabolites, nor the location-only
    reference; the summary table has one row per task and method, cross-modal first (the
    reference last in its task), with each sample's median."""
    from spatialfuse.report.aggregate import imputation_pairs
    from spatialfuse.report.figures import method_medians

    pair, scores = imputation_pairs(cohort["tree"], "a")
    assert pair["method"] == "genes → metabolites by vae"  # not gnn_reconstruction (+0.1)
    vae = scores[scores["method"] == "vae_from_rna"]["pearson_r"]
    assert pair["median_r"] == pytest.approx(vae.median())
    assert np.isfinite(pair["measured"]).all() and len(pair["predicted"]) == len(pair["measured"])
    both = pd.concat([scores.assign(sample="a"), scores.assign(sample="b").iloc[:12]])
    table = method_medians(both, ["a", "b"])
    assert list(table.index) == ["genes → metabolites: ridge", "genes → metabolites: vae",
                                 "genes → metabolites: location only, nearest spots (reference)",
                                 "metabolites, hidden spots: knn_smooth",
                                 "metabolites, hidden spots: gnn_reconstruction"]
    assert table.loc["genes → metabolites: vae", "a"] == pytest.approx(vae.median())
    assert np.isnan(table.loc["genes → metabolites: vae", "b"])  # b lacks it: not 0


def test_link_recovery_text_says_when_there_is_no_precision():
    from spatialfuse.report.summary import link_recovery_text

    lr = {"true_positives": 1, "true_links_tested": 81, "precision": 0.25}
    assert link_recovery_text(lr) == "1/81 (precision 0.25)"
    lr.update(true_positives=0, precision=float("nan"))  # nothing called significant
    assert link_recovery_text(lr) == "0/81 (no link called significant, so no precision)"


def test_metrics_figure_compares_best_baseline_with_best_model_per_direction():
    from spatialfuse.report.figures import crossmodal_best

    rows = [("s1", "impute", "crossmodal.rna_to_msi.ridge.median_pearson", 0.10),
            ("s1", "impute", "crossmodal.rna_to_msi.knn.median_pearson", 0.12),
            ("s1", "impute", "crossmodal.rna_to_msi.vae.median_pearson", 0.15),
            ("s1", "impute", "crossmodal.rna_to_msi.gnn_ridge.median_pearson", 0.11),
            ("s1", "impute", "crossmodal.rna_to_msi.model_minus_baseline_median_pearson", 0.5),
            ("s1", "impute", "crossmodal.msi_to_rna.ridge.median_pearson", 0.05),
            ("s1", "impute", "crossmodal.msi_to_rna.vae.median_pearson", 0.04),
            ("s1", "impute", "crossmodal.rna_to_msi.location.median_pearson", 0.30),
            ("s1", "impute", "denoise.msi.knn_smooth.median_pearson", 0.80),
            ("s1", "model", "crossmodal.rna_to_msi.vae.median_pearson", 0.99)]
    m = pd.DataFrame(rows, columns=["sample", "stage", "metric", "value"])
    best = crossmodal_best(m).set_index("metric")["value"]
    assert best.to_dict() == {"genes → metabolites: best baseline": 0.12,
                              "genes → metabolites: best model-based": 0.15,
                              "genes → metabolites: location only (reference)": 0.30,
                              "metabolites → genes: best baseline": 0.05,
                              "metabolites → genes: best model-based": 0.04}


def test_cohort_table_rows_follow_q_then_effect_or_effect_alone_without_tests():
    from spatialfuse.report.summary import _cohort_order

    t = pd.DataFrame({"feature": list("abcd"), "log2fc": [0.1, -3.0, 1.0, 2.0],
                      "qval": [0.5, 0.01, np.nan, 0.01]})
    out, order = _cohort_order(t)
    # by q (NaN last), equal q by the larger |log2fc|
    assert list(out["feature"]) == ["b", "d", "a", "c"] and order == "by qval"
    # one sample per condition: no q-values at all, so the largest effects come first
    out, order = _cohort_order(t.assign(qval=np.nan))
    assert list(out["feature"]) == ["b", "d", "c", "a"]
    assert order.startswith("by the largest |log2fc|") and "no qval" in order
    out, order = _cohort_order(t[["feature"]])
    assert list(out["feature"]) == list("abcd") and order == ""


def test_glance_table_names_the_batch_where_the_cohort_is_compared_within_batches():
    from spatialfuse.report.summary import _glance

    metrics = pd.DataFrame(columns=["sample", "stage", "model", "metric", "value"])
    flags = pd.DataFrame(columns=["sample"])
    args = (["a", "b"], {"a": "ctl", "b": "trt"}, {}, {}, metrics, flags)
    assert list(_glance(*args, {"a": "b1", "b": "b2"})["batch"]) == ["b1", "b2"]
    assert "batch" not in _glance(*args, {"a": "b1", "b": "b1"}).columns
    assert "batch" not in _glance(*args).columns
    # no conditions, no comparison: the batch is not shown either
    no_cond = (["a", "b"], {"a": "", "b": ""}, {}, {}, metrics, flags)
    assert "batch" not in _glance(*no_cond, {"a": "b1", "b": "b2"}).columns


def test_summary_opens_with_flags_and_is_self_contained(cohort):
    html = cohort["html"].read_text(encoding="utf-8")
    i_flag, i_cards = html.index("Needs attention"), html.index("Results per sample")
    assert i_flag < i_cards < html.index("id='provenance'")
    assert "Dice 0.41" in html[i_flag:i_cards]  # sample b's registration warning, at the top
    assert "id='sample-b'" in html and "card flagged" in html
    # offline: no external script, stylesheet, image or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "@import" not in html
    imgs = re.findall(r"<img [^>]*src=\"([^\"]{0,30})", html)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    # interactive spot maps: one per sample, a tooltip per spot, both layers switchable
    assert html.count('<svg class="spotmap"') == 2
    assert html.count("<circle ") == 2 * 120 and "<title>A0000-1 · x" in html
    assert re.search(r'data-i="0"[^>]*>truth</button>', html) and ">vae</button>" in html
    assert html.count(">truth</button>") == 1  # sample b has no truth: no empty truth layer
    assert html.count("MSI tissue outside the capture area") == 1  # b's 1 % is not worth a line
    for needle in ("registration error (µm, median)", "ARI pca", "ARI vae",
                   "registration uncertainty</dt><dd>±7.3 µm",
                   "MSI tissue outside the capture area</dt><dd>18% of it: placed by",
                   "registration error in the capture area</dt><dd>9.5 µm median",
                   'table class="sortable"',
                   "Input checksums", "Run time per rule", "&quot;model.vae.seed&quot;: 3",
                   "Every installed Python package", "Strongest metabolite",
                   "genes → metabolites, held-out r (best model vs best baseline)",
                   "+0.030 [+0.010, +0.050] better", "Held-out prediction across samples"):
        assert needle in html, needle
    # the models benchmark, run on these results, is shown as a table with its rows
    bench = html.split("Joint models against published peers")[1].split("</table>")[0]
    assert "SpatialMETA" in bench and "0.9871" in bench


def test_report_without_truth_conditions_pathways_or_training(tmp_path):
    """A user's real data: no truth, no conditions, one model with no training curve, no
    pathway hits, nothing flagged, plus a cohort table when the optional rule wrote one."""
    cohort_tsv = tmp_path / "cohort.tsv"
    pd.DataFrame({"feature": ["x", "y"], "log2fc": [1.0, -2.0], "qval": [0.2, 0.01]}).to_csv(
        cohort_tsv, sep="\t", index=False)
    r = make_report(tmp_path, samples=("s1",), models=("pca",), truth_for=(), flag=(),
                    pathways=False, cohort=[cohort_tsv])
    html = r["html"].read_text(encoding="utf-8")
    assert "passed every stage" in html and "Needs attention" not in html
    glance = html.split('id="glance"')[1].split("</table>")[0]
    assert "ARI" not in glance and "registration error" not in glance and "Dice" in glance
    assert "registration uncertainty (µm)" in glance and "7.3" in glance
    assert ">truth</button>" not in html
    assert "Cohort comparison" in html and html.index("0.01") < html.index("0.2")


def test_every_report_output_has_a_caption_and_category():
    """Each ``report(...)`` in the workflow names an existing, non-trivial caption and a
    category, so ``snakemake --report`` shows every figure and table explained."""
    blocks = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"report\(\s*(.*?)\n\s*\)", text, re.S):
            blocks.append((smk.name, m.group(1)))
    assert len(blocks) >= 16
    for name, body in blocks:
        cap = re.search(r'caption="([^"]+)"', body)
        assert cap and re.search(r'category="[^"]+"', body), (name, body)
        path = (REPO / "workflow" / "rules" / cap.group(1)).resolve()
        assert path.exists() and len(path.read_text().split()) >= 25, path


def test_prediction_lines_state_the_paired_verdict_and_skip_what_is_missing():
    from spatialfuse.report.summary import prediction_lines

    assert prediction_lines({}) == [] and prediction_lines({"crossmodal": {}}) == []
    cmp = {"method": "gnn", "baseline": "ridge", "difference": -0.009, "ci95_low": -0.017,
           "ci95_high": -0.001, "verdict": "worse"}
    imp = {"crossmodal": {"msi_to_rna": {
        "ridge": {"median_pearson": 0.03, "median_pearson_block": 0.05},
        "gnn": {"median_pearson": 0.031, "median_pearson_block": 0.041},
        "model_vs_baselines": {**cmp, "difference": 0.001, "ci95_low": -0.004,
                               "ci95_high": 0.006, "verdict": "tie"},
        "model_vs_baselines_block": cmp}}}
    (label, text), = prediction_lines(imp)
    assert label.startswith("metabolites → genes")
    assert text == ("pooled: gnn 0.03 vs ridge 0.03, +0.001 [-0.004, +0.006] tie; "
                    "within blocks: gnn 0.04 vs ridge 0.05, -0.009 [-0.017, -0.001] worse")
    # and what location alone scored on the same blocks, when the stage scored it
    imp["crossmodal"]["msi_to_rna"]["location"] = {"median_pearson": 0.004,
                                                   "median_pearson_block": 0.021}
    assert prediction_lines(imp)[0][1].endswith(
        "worse; location only (reference): pooled 0.00 (nearest spots), within blocks 0.02 "
        "(nearest spots)")
    # with both references, the stronger one on each score, named
    imp["crossmodal"]["msi_to_rna"]["location_kriging"] = {"median_pearson": -0.05,
                                                           "median_pearson_block": 0.035}
    assert prediction_lines(imp)[0][1].endswith(
        "worse; location only (reference): pooled 0.00 (nearest spots), within blocks 0.04 "
        "(kriging)")
    # and how far the best model-based method and the best baseline are above it
    imp["crossmodal"]["msi_to_rna"]["model_vs_location_block"] = {
        "method": "gnn", "reference": "location", "difference": 0.02, "ci95_low": 0.012,
        "ci95_high": 0.027, "verdict": "better"}
    imp["crossmodal"]["msi_to_rna"]["baseline_vs_location_block"] = {
        "method": "ridge", "reference": "location", "difference": 0.029, "ci95_low": -0.002,
        "ci95_high": 0.04, "verdict": "tie"}
    assert prediction_lines(imp)[0][1].endswith(
        "worse; location only (reference): pooled 0.00 (nearest spots), within blocks 0.04 "
        "(kriging); above location within blocks: gnn +0.020 [+0.012, +0.027] better, ridge +0.029 [-0.002, +0.040] tie")
    # where the best maps are: said only when the stage named a best method
    imp["crossmodal"]["msi_to_rna"]["best_method"] = "gnn_ridge"
    imp["crossmodal"]["rna_to_msi"] = {"best_method": "ridge"}
    assert prediction_lines(imp)[-1] == (
        "best predicted maps (impute/imputed.h5mu)",
        "metabolites from genes: msi layer imputed_ridge_from_rna; "
        "genes from metabolites: rna layer imputed_gnn_ridge_from_msi")
    del imp["crossmodal"]["rna_to_msi"], imp["crossmodal"]["msi_to_rna"]["best_method"]
    # spots the MSI missed: said only when there are some
    imp["unmeasured_spots"] = {"n_spots": 0}
    assert len(prediction_lines(imp)) == 1
    imp["unmeasured_spots"] = {"n_spots": 120, "method": "ridge", "heldout_pearson_median": 0.31,
        "n_beyond_validated_distance": 7, "validated_distance_um": 412.0}
    assert prediction_lines(imp)[-1] == (
        "spots without MSI", "120: metabolites predicted from genes by ridge (held-out median r "
        "0.31); 7 further from measured spots than the CV scored (412 µm)")
    imp["unmeasured_spots"].update(output="combined", n_beyond_validated_distance=0)
    assert prediction_lines(imp)[-1] == (
        "spots without MSI", "120: metabolites predicted from genes by ridge, averaged with the "
        "measured MSI around them (better on the held-out blocks) (held-out median r 0.31)")


def test_each_samples_umap_depends_on_its_own_embedding_only_and_tiles_do_not_overlap():
    """Per-section models have unrelated latent axes, so each sample is projected on its own:
    changing one sample's embedding leaves the other's coordinates as they were (a pooled
    projection would move both), and the tiles drawing them side by side are disjoint."""
    from spatialfuse.report.latent import sample_umaps, tile_samples

    rng = np.random.default_rng(0)
    a = (np.array([f"a{i}" for i in range(60)]), rng.normal(size=(60, 8)))
    b = (np.array([f"b{i}" for i in range(80)]), rng.normal(size=(80, 8)) + 5)
    c = (np.array([f"c{i}" for i in range(50)]), rng.normal(size=(50, 8)))
    u1 = sample_umaps({"a": a, "b": b, "c": c}, seed=3, max_spots=150)
    u2 = sample_umaps({"a": a, "b": (b[0], b[1][:, ::-1] * 3), "c": c}, seed=3, max_spots=150)
    assert list(u1.columns) == ["sample", "barcode", "umap1", "umap2"]
    assert u1.groupby("sample").size().to_dict() == {"a": 50, "b": 50, "c": 50}  # 150 shared
    for s in ("a", "c"):
        pd.testing.assert_frame_equal(u1[u1["sample"] == s], u2[u2["sample"] == s])
    assert not np.allclose(u1.loc[u1["sample"] == "b", "umap1"], u2.loc[u2["sample"] == "b", "umap1"])
    tiled, origin = tile_samples(u1)
    assert list(origin) == ["a", "b", "c"]
    boxes = {s: (g["x"].min(), g["x"].max(), g["y"].min(), g["y"].max())
             for s, g in tiled.groupby("sample")}
    for s, (x0, x1, y0, y1) in boxes.items():
        ox, oy = origin[s]
        assert ox - 1e-9 <= x0 and x1 <= ox + 1 + 1e-9 and oy - 1e-9 <= y0 and y1 <= oy + 1 + 1e-9
        assert max(x1 - x0, y1 - y0) == pytest.approx(1.0)  # scaled to the tile, shape kept
    for s, t in [("a", "b"), ("a", "c"), ("b", "c")]:
        (ax0, ax1, ay0, ay1), (bx0, bx1, by0, by1) = boxes[s], boxes[t]
        assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0


def test_spot_map_draws_bins_as_squares_of_their_side():
    """The interactive map draws Visium spots as circles of their diameter and Visium HD bins
    as squares of their side, centred on the bin, each with its layers and tooltip."""
    from spatialfuse.report.html import spot_map_svg

    spots = pd.DataFrame({"barcode": ["a", "b", "c"], "x_um": [8.0, 24.0, 40.0],
                          "y_um": [8.0, 8.0, 24.0], "vae": [0, 1, 1]})
    hd = spot_map_svg(spots, ["vae"], "vae", diameter_um=16.0, square=True)
    assert "<circle " not in hd and hd.count("<rect ") == 3
    assert '<rect x="16.0" y="0.0" width="16.0" height="16.0" class="d1" data-l="1">' in hd
    assert "<title>b · x 24 µm, y 8 µm · domain vae: 1</title></rect>" in hd
    visium = spot_map_svg(spots, ["vae"], "vae", diameter_um=55.0)
    assert "<rect " not in visium and visium.count('r="27.5"') == 3
