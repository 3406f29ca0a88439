"""Interpret stage: spatial null calibration, associations, markers, pathways."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spatialfuse.simulate.fields import SmoothField


def _hex_disc(radius_um: float = 1100.0, pitch: float = 100.0, squash: float = 1.0) -> np.ndarray:
    dy = pitch * np.sqrt(3) / 2
    n = int(2.4 * radius_um / dy) + 2
    xy = np.array([(c * pitch / 2, r * dy) for r in range(n) for c in range(r % 2, 2 * n, 2)])
    v = xy - xy.mean(0)
    return xy[np.hypot(v[:, 0], v[:, 1] / squash) < radius_um]


def _fields(rng, xy, k, noise=0.5):
    return np.stack([SmoothField.random(rng)(xy) for _ in range(k)], 1) + noise * rng.normal(
        size=(len(xy), k))


@pytest.fixture(scope="module")
def independent_maps():
    """40 metabolite and 40 gene maps: independent smooth random fields (wavelengths
    0.6–2 mm, like the demo's link fields) plus spot noise on a Visium-like hex disc."""
    rng = np.random.default_rng(11)
    xy = _hex_disc()
    return xy, _fields(rng, xy, 40), _fields(rng, xy, 40)


@pytest.mark.parametrize("smooth", [False, True])
def test_spatial_null_keeps_nominal_false_positive_rate(independent_maps, smooth):
    """1,600 pairs of independent smooth maps: the rotation null calls ≤ 2 α of them at
    p < α, while plain Pearson (spots as independent) calls several times α — with and
    without the kNN smoothing of the pipeline's default statistic."""
    from spatialfuse.graph import knn_graph, row_normalise
    from spatialfuse.interpret import rotation_draws, spatial_correlation_test

    xy, A, B = independent_maps
    W = row_normalise(knn_graph(xy, 6, include_self=True)) if smooth else None
    out = spatial_correlation_test(A, B, rotation_draws(xy, 200, seed=0), smoother=W)
    n = len(xy)
    t = out["r"] * np.sqrt((n - 2) / (1 - out["r"] ** 2))
    p_pearson = 2 * stats.t.sf(np.abs(t), n - 2)
    for alpha in (0.05, 0.01):
        fpr_spatial = (out["pval"] < alpha).mean()
        fpr_pearson = (p_pearson < alpha).mean()
        assert fpr_spatial <= 2 * alpha, (alpha, fpr_spatial)
        assert fpr_pearson >= 5 * alpha, (alpha, fpr_pearson)
    assert 5 < np.median(out["n_eff"]) < n / 4  # smooth maps: far fewer independent spots


def test_spatial_null_calibrated_on_unstructured_smoothed_maps():
    """White-noise maps, kNN-smoothed: the null smooths each rotated map on the fixed lattice,
    so short-range structure made by the smoothing itself is not mistaken for association."""
    from spatialfuse.graph import knn_graph, row_normalise
    from spatialfuse.interpret import rotation_draws, spatial_correlation_test

    rng = np.random.default_rng(8)
    xy = _hex_disc()
    A, B = rng.normal(size=(len(xy), 40)), rng.normal(size=(len(xy), 40))
    W = row_normalise(knn_graph(xy, 6, include_self=True))
    out = spatial_correlation_test(A, B, rotation_draws(xy, 200, seed=0), smoother=W)
    assert (out["pval"] < 0.05).mean() <= 0.075 and (out["pval"] < 0.01).mean() <= 0.02


def test_spatial_null_calibrated_on_elongated_tissue():
    """An elliptical section (3:1): rotations lose overlap, the null must stay calibrated."""
    from spatialfuse.interpret import rotation_draws, spatial_correlation_test

    rng = np.random.default_rng(5)
    xy = _hex_disc(1500.0, squash=0.33)
    A, B = _fields(rng, xy, 30), _fields(rng, xy, 30)
    d = rotation_draws(xy, 150, seed=1)
    assert d.n_draws == 150 and 0.5 <= d.overlap < 0.95
    out = spatial_correlation_test(A, B, d)
    assert (out["pval"] < 0.05).mean() <= 0.1


def test_spatial_null_detects_a_shared_field():
    """A gene and a metabolite that share one smooth field (plus independent noise and
    independent smooth backgrounds) are found with a small p-value."""
    from spatialfuse.interpret import rotation_draws, spatial_correlation_test

    rng = np.random.default_rng(3)
    xy = _hex_disc()
    shared = SmoothField.random(rng)(xy)
    A = _fields(rng, xy, 5)
    B = _fields(rng, xy, 5)
    A[:, 0] += 1.2 * shared
    B[:, 0] += 1.2 * shared
    out = spatial_correlation_test(A, B, rotation_draws(xy, 200, seed=0))
    assert out["pval"][0, 0] < 1e-3
    assert out["pval"][0, 0] == out["pval"].min()


def test_rotation_draws_are_seeded_and_move_the_map():
    from spatialfuse.interpret import rotation_draws

    xy = _hex_disc(800.0)
    a, b, c = (rotation_draws(xy, 50, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.idx, b.idx)
    assert not np.array_equal(a.idx, c.idx)
    moved = np.hypot(*(xy[a.idx] - xy[None]).transpose(2, 0, 1))
    assert np.median(moved) > 150  # no near-identity rotation
    with pytest.raises(ValueError, match="too elongated"):
        line = np.c_[np.arange(200) * 100.0, np.zeros(200)]
        rotation_draws(line, 50, seed=0, max_tries=200)


def _paired(rng, xy, A, B, ann=None):
    rna = ad.AnnData(B, obsm={"spatial": xy})
    rna.var_names = [f"G{i}" for i in range(B.shape[1])]
    msi = ad.AnnData(A, obsm={"spatial": xy})
    msi.var_names = [f"m{i}" for i in range(A.shape[1])]
    msi.var["mz"] = 100.0 + np.arange(A.shape[1])
    msi.var["annotation"] = ann if ann is not None else ""
    return rna, msi


def test_associate_adjusts_for_domains_and_keeps_all_candidates():
    """Two features that only share the domain pattern are associated under plain Pearson
    but not after centring within domains; a true shared field is; every annotation candidate
    is carried into the table."""
    from spatialfuse.interpret import associate

    rng = np.random.default_rng(2)
    xy = _hex_disc()
    labels = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
    shared = SmoothField.random(rng)(xy)
    A, B = _fields(rng, xy, 4), _fields(rng, xy, 4)
    A[:, 0] += 2.0 * labels
    B[:, 0] += 2.0 * labels  # domain co-localisation only
    A[:, 1] += 1.5 * shared
    B[:, 1] += 1.5 * shared  # a real link
    ann = ["X [M+H]+", "Glucose [M+H]+;Fructose [M+H]+;Galactose [M+Na]+", "", "Y [M+H]+"]
    rna, msi = _paired(rng, xy, A, B, ann)
    df = associate(rna, msi, labels=labels, n_genes=4, seed=0, n_null=150).set_index(
        ["metabolite_feature", "gene"])
    assert df.loc[("m0", "G0"), "pearson_qval"] < 1e-6 and df.loc[("m0", "G0"), "qval"] > 0.05
    assert df.loc[("m1", "G1"), "qval"] < 0.05
    assert df.loc[("m1", "G1"), "annotation"] == ann[1]
    assert df.loc[("m1", "G1"), "n_candidates"] == 3
    assert {"r", "lee_L", "n_eff", "pval", "qval", "pearson_r", "pearson_pval"} <= set(df.columns)
    # Lee's L and the smoothed correlation agree in sign and ordering for the link
    assert df.loc[("m1", "G1"), "lee_L"] == df["lee_L"].max()


def test_within_domain_associations():
    from spatialfuse.interpret import rotation_draws, within_domain_associations

    rng = np.random.default_rng(4)
    xy = _hex_disc(1300.0)
    labels = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
    noise = rng.normal(size=len(xy))
    A, B = _fields(rng, xy, 2), _fields(rng, xy, 2)
    # coupled only in domain 1
    A[:, 0] = np.where(labels == 1, noise, A[:, 0])
    B[:, 0] = np.where(labels == 1, noise + 0.3 * rng.normal(size=len(xy)), B[:, 0])
    rna, msi = _paired(rng, xy, A, B)
    pairs = pd.DataFrame({"metabolite_feature": ["m0", "m1"], "gene": ["G0", "G1"]})
    out = within_domain_associations(rna, msi, pairs, labels, rotation_draws(xy, 100, seed=0))
    t = out.set_index(["metabolite_feature", "domain"])
    assert t.loc[("m0", 1), "qval"] < 1e-6 and t.loc[("m0", 1), "r"] > 0.9
    assert t.loc[("m0", 0), "pval"] > 1e-3
    assert set(out["n_spots"]) == {int((labels == 0).sum()), int((labels == 1).sum())}


def test_ovr_wilcoxon_matches_scipy():
    from spatialfuse.interpret.markers import ovr_wilcoxon

    rng = np.random.default_rng(0)
    X = np.round(rng.exponential(1, (80, 9)), 1)
    X[rng.random(X.shape) < 0.3] = 0  # many ties
    lab = rng.integers(0, 4, 80)
    U, p = ovr_wilcoxon(X, lab, 4)
    for d in range(4):
        u2, p2 = stats.mannwhitneyu(X[lab == d], X[lab != d], axis=0, method="asymptotic")
        np.testing.assert_allclose(U[d], u2)
        np.testing.assert_allclose(p[d], p2, rtol=1e-10)


def test_domain_markers_find_planted_markers():
    from spatialfuse.interpret import domain_markers, top_markers

    rng = np.random.default_rng(1)
    lab = np.repeat([0, 1, 2], 40)
    counts = rng.poisson(2.0, (120, 20)).astype(float)
    counts[lab == 1, 3] += 8
    counts[lab == 2, 7] += 8
    a = ad.AnnData(np.log1p(counts))
    a.var_names = [f"g{i}" for i in range(20)]
    m = domain_markers(a, lab, "rna")
    assert len(m) == 3 * 20 and m["qval"].between(0, 1).all()
    top = top_markers(m, 1, fdr=0.05).set_index("domain")["feature"]
    assert top[1] == "g3" and top[2] == "g7"
    row = m[(m["domain"] == 1) & (m["feature"] == "g3")].iloc[0]
    expected = np.log2(np.expm1(a.X[lab == 1, 3]).mean() / np.expm1(a.X[lab != 1, 3]).mean())
    assert row["log2fc"] == pytest.approx(expected, rel=1e-6)
    assert row["auroc"] > 0.95 and row["pct_in"] == 1.0


def test_pathway_enrichment_pools_genes_and_metabolites():
    from spatialfuse.interpret import pair_enrichment, pathway_enrichment

    table = pd.DataFrame({
        "pathway_id": ["P1"] * 5 + ["P2"] * 4,
        "pathway_name": ["glycolysis"] * 5 + ["other"] * 4,
        "analyte_type": ["gene", "gene", "gene", "compound", "compound",
                         "gene", "gene", "compound", "compound"],
        "name": ["HK1", "PFKM", "PKM", "Glucose", "Pyruvate", "ABC1", "ABC2", "Urea", "Citrate"],
    })
    table["key"] = table["name"].str.upper()
    universe = {"HK1", "PFKM", "PKM", "ABC1", "ABC2", "Glucose", "Pyruvate", "Urea", "Citrate"} | {
        f"X{i}" for i in range(40)}
    pw = pathway_enrichment({"d0": {"hk1", "PKM", "glucose"}}, universe, table)
    row = pw.set_index("pathway_id").loc["P1"]
    assert row["overlap"] == 3 and row["n_genes"] == 2 and row["n_metabolites"] == 1
    assert "P2" not in set(pw["pathway_id"])
    # pairs: both members of P1 significant, unrelated pairs not
    pairs = pd.DataFrame({"metabolite": ["Glucose", "Pyruvate", "Urea", "Glucose", "Citrate"] * 4,
                          "gene": ["HK1", "PKM", "ABC1", "X1", "X2"] * 4})
    pairs = pd.concat([pairs, pd.DataFrame({"metabolite": [f"M{i}" for i in range(30)],
                                            "gene": [f"X{i}" for i in range(30)]})])
    sig = pairs["gene"].isin(["HK1", "PKM"]).to_numpy()
    sig[-3:] = True
    pe = pair_enrichment(pairs, sig, table)
    assert list(pe["pathway_id"]) == ["P1"]
    assert pe["members"].iloc[0] == "Glucose~HK1;Pyruvate~PKM" and pe["pval"].iloc[0] < 0.05


def test_user_pathway_table_errors_name_the_file(tmp_path):
    from spatialfuse.errors import InputError
    from spatialfuse.interpret import load_pathways

    with pytest.raises(InputError, match="does not exist"):
        load_pathways(tmp_path / "none.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("pathway\tgene\nP1\tHK1\n")
    with pytest.raises(InputError, match=r"bad\.tsv.*lacks column"):
        load_pathways(bad)
    good = tmp_path / "good.tsv"
    good.write_text("pathway_id\tpathway_name\tanalyte_type\tname\nP1\tg\tGene\tHK1\n")
    assert load_pathways(good)["key"].tolist() == ["HK1"]
    shipped = load_pathways(None)
    assert {"Reactome", "WikiPathways"} <= set(shipped["source"])


def _section(rng, sample, shift_gene=0.0, offset_sd=0.0):
    """One small section: 3 domains of 40 spots; gene g0 is raised by ``shift_gene`` in domain
    1; genes g1–g5 get a per-sample offset (sample-to-sample variation, no condition
    effect)."""
    n, G = 120, 6
    dom = np.repeat([0, 1, 2], 40)
    offsets = rng.normal(0, offset_sd, G)
    offsets[0] *= 0.2  # g0: little sample-to-sample variation
    X = rng.normal(1.0, 0.3, (n, G)) + offsets[None, :]
    X[dom == 1, 0] += shift_gene
    rna = ad.AnnData(X)
    rna.var_names = [f"g{i}" for i in range(G)]
    rna.obs_names = [f"{sample}_{i}" for i in range(n)]
    M = rng.normal(2.0, 0.3, (n, 3))
    msi = ad.AnnData(M)
    msi.obs_names = rna.obs_names
    msi.var_names = ["mz_100.0", "mz_200.0", "mz_300.0"]
    msi.var["mz"] = [100.0, 200.0, 300.0 * (1 + 3e-6 * (sample[-1] == "2"))]
    msi.var["annotation"] = ["Glucose [M+H]+;Fructose [M+H]+", "", ""]
    spots = pd.DataFrame({"sample": sample, "barcode": rna.obs_names, "pca": dom})
    return rna, msi, spots


def test_condition_differences_use_samples_as_replicates():
    """3 vs 3 sections: a planted shift of g0 in domain 1 is found; genes with large
    sample-to-sample offsets but no condition effect are not (a test over spots would call
    them); metabolites are matched by annotation or m/z; one sample per condition gives
    effects without p-values."""
    from spatialfuse.report.conditions import run_conditions

    rng = np.random.default_rng(0)
    paired, spots, cond = {}, [], {}
    for i in range(6):
        s = f"s{i}"
        treated = i >= 3
        rna, msi, sp_ = _section(rng, s, shift_gene=1.5 if treated else 0.0, offset_sd=0.5)
        paired[s] = (rna, msi)
        spots.append(sp_)
        cond[s] = "treated" if treated else "control"
    spots = pd.concat(spots, ignore_index=True)
    feats, abund = run_conditions(spots, "pca", cond, paired)
    assert set(feats["contrast"]) == {"treated vs control"}
    assert (feats["n_a"] == 3).all() and (feats["n_b"] == 3).all()
    hit = feats[(feats["feature"] == "g0") & (feats["domain"] == 1)].iloc[0]
    assert hit["qval"] < 0.05 and hit["log2fc"] == pytest.approx(1.5 / np.log(2), abs=0.8)
    others = feats[(feats["modality"] == "rna") & ~((feats["feature"] == "g0")
                                                    & (feats["domain"] == 1))]
    assert (others["qval"] > 0.05).all()
    # the same data tested over spots calls sample-to-sample offsets significant
    a = np.vstack([paired[f"s{i}"][0].X[:, 3] for i in range(3)]).ravel()
    b = np.vstack([paired[f"s{i}"][0].X[:, 3] for i in range(3, 6)]).ravel()
    assert stats.ttest_ind(a, b).pvalue < 1e-3
    mets = set(feats.loc[feats["modality"] == "msi", "feature"])
    assert mets == {"Glucose [M+H]+;Fructose [M+H]+", "m/z 200.0000", "m/z 300.0000"}
    assert len(abund) == 3 and abund["difference"].abs().max() < 1e-12
    # one sample per condition: effects, no test
    two = {"s0": "control", "s3": "treated"}
    f1, a1 = run_conditions(spots, "pca", two, {s: paired[s] for s in two})
    assert f1["pval"].isna().all() and f1["note"].str.contains("2 samples").all()
    assert f1["log2fc"].notna().all() and a1["pval"].isna().all()


def test_conditions_are_compared_within_batches():
    """With the samples sheet's batch column, each feature is regressed on condition and
    batch over the samples. 4 vs 4 sections in two batches, each batch shifting every gene by
    its own offset: the planted condition effect of g0 in domain 1 is found within batches and
    lost in the batch variance without them, and a batch effect on g1, which the unbalanced
    design (3 treated of 4 in batch b2) turns into a condition effect without them, is gone. One
    batch gives Student's t exactly; a batch that coincides with the condition is reported
    as confounded, effect only."""
    from spatialfuse.report.conditions import NOTE_CONFOUNDED, run_conditions

    rng = np.random.default_rng(3)
    batch = {f"s{i}": b for i, b in enumerate(["b1", "b1", "b1", "b2", "b1", "b2", "b2", "b2"])}
    cond = {f"s{i}": "treated" if i >= 4 else "control" for i in range(8)}
    offset = {"b1": 0.0, "b2": 1.0}
    paired, spots = {}, []
    for s in cond:
        rna, msi, sp_ = _section(rng, s, shift_gene=0.5 if cond[s] == "treated" else 0.0)
        rna.X = rna.X + offset[batch[s]] * 4.0 * (rna.var_names == "g0")  # batch on g0 as well
        rna.X[:, 1] += offset[batch[s]] * 2.0  # a batch effect alone on g1
        paired[s] = (rna, msi)
        spots.append(sp_)
    spots = pd.concat(spots, ignore_index=True)

    def row(t, gene, dom):
        return t[(t["feature"] == gene) & (t["domain"] == dom)].iloc[0]

    plain, _ = run_conditions(spots, "pca", cond, paired)
    within, abund = run_conditions(spots, "pca", cond, paired, batches=batch)
    hit = row(within, "g0", 1)
    assert hit["qval"] < 0.05 and hit["note"] == "adjusted for batch (2 batches)"
    assert hit["log2fc"] == pytest.approx(0.5 / np.log(2), abs=0.2)
    assert row(plain, "g0", 1)["qval"] > 0.05  # lost in the batch variance
    # g1: the unbalanced batches bias the plain effect (2.0 × (3/4 − 1/4) = 1.0 on the log
    # scale); within batches it is gone
    assert (plain.loc[plain["feature"] == "g1", "log2fc"] > 0.9 / np.log(2) - 0.4).all()
    g1 = within[(within["feature"] == "g1")]
    assert (g1["qval"] > 0.05).all() and g1["log2fc"].abs().max() < 0.3
    assert (abund["note"] == "adjusted for batch (2 batches)").all()
    # one batch: Student's t, to the last bit
    one, one_ab = run_conditions(spots, "pca", cond, paired, batches={s: "b1" for s in cond})
    pd.testing.assert_frame_equal(one, plain)
    # the batch is the condition: nothing can be tested
    conf, conf_ab = run_conditions(spots, "pca", cond, paired,
                                   batches={s: "x" + c for s, c in cond.items()})
    assert conf["pval"].isna().all() and (conf["note"] == NOTE_CONFOUNDED).all()
    assert conf_ab["pval"].isna().all()
    key = ["domain", "modality", "feature"]
    np.testing.assert_allclose(conf.sort_values(key)["log2fc"], plain.sort_values(key)["log2fc"])


def test_regression_on_the_condition_alone_is_students_t():
    """The within-batch test is OLS on condition + batch indicators; with no batch indicator
    it is Student's t with pooled variance (scipy's), and a feature the design fits exactly
    gets no t, as Student's t does. Missing batch labels are one batch of their own."""
    from spatialfuse.report.conditions import _batch_labels, _ols_condition

    rng = np.random.default_rng(0)
    A, B = rng.normal(0.5, 1.0, (4, 6)), rng.normal(0.0, 1.0, (5, 6))
    A[:, 5], B[:, 5] = 2.0, 1.0  # constant within each condition
    is_a = np.r_[np.ones(4, bool), np.zeros(5, bool)]
    effect, t, p = _ols_condition(np.vstack([A, B]), is_a, np.empty((9, 0)))
    ref = stats.ttest_ind(A[:, :5], B[:, :5])
    np.testing.assert_allclose(t[:5], ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p[:5], ref.pvalue, rtol=1e-10)
    np.testing.assert_allclose(effect, A.mean(0) - B.mean(0), atol=1e-12)
    assert np.isnan(t[5]) and np.isnan(p[5])
    assert _batch_labels({"a": "b1", "b": np.nan}, ["a"], ["b", "c"]) == (["b1"], ["", ""])
    assert _batch_labels({"a": "", "b": np.nan}, ["a"], ["b"]) == (None, None)


@pytest.mark.parametrize("a,b", [
    ("L-Glutamic Acid", "L-glutamate(1-)"), ("Pyruvate", "Pyruvic acid"),
    ("L-Serine", "L-serine zwitterion"), ("Succinic acid", "succinate(2-)"),
    ("Acetylcholine chloride", "Acetylcholine"), ("D-Proline", "L-Proline"),
    ("Cytidine 5′-triphosphate (disodium salt)", "Cytidine 5'-triphosphate"),
])
def test_metabolite_names_meet_pathway_compounds(a, b):
    from spatialfuse.interpret.pathways import metabolite_key

    assert metabolite_key(a) == metabolite_key(b)
    assert metabolite_key(metabolite_key(a)) == metabolite_key(a)


def test_shipped_table_names_most_demo_metabolites():
    """The annotation table's names reach the shipped pathway table's compounds."""
    from importlib import resources

    from spatialfuse.interpret import load_pathways
    from spatialfuse.interpret.pathways import metabolite_key

    t = load_pathways(None)
    keys = set(t.loc[t["analyte_type"] == "compound", "key"])
    names = pd.read_csv(resources.files("spatialfuse.resources") / "metabolites.tsv",
                        sep="\t")["name"]
    assert names.map(metabolite_key).isin(keys).mean() > 0.4


@pytest.fixture(scope="module")
def small_paired(small_ingested, small_demo_files):
    from spatialfuse.align import run_align

    out = run_align(small_ingested["st"], small_ingested["msi"], {}, sample="s",
                    truth_dir=small_demo_files[2])
    return out["rna"], out["msi_spots"]


def test_run_interpret_on_the_small_demo(small_paired, small_demo_files):
    """True domains as labels: the spatial test calls far fewer pairs than plain Pearson and
    what it calls is mostly true links; every table and summary field is there."""
    from spatialfuse.interpret import run_interpret

    rna, msi = small_paired
    truth = pd.read_csv(small_demo_files[2] / "spots.tsv", sep="\t", index_col=0)
    labels = truth.loc[rna.obs_names, "domain"].to_numpy()
    out = run_interpret(rna, msi, labels, {"n_genes": 80, "n_null": 100, "fdr": 0.1}, seed=0,
                        truth_dir=small_demo_files[2])
    s = out["summary"]
    assert s["association_method"] == "spatial" and s["null_draws"] == 100
    assert s["associations_significant"] < s["associations_significant_pearson"] / 5
    lr, lp = s["link_recovery"], s["link_recovery_pearson"]
    assert lp["precision"] < 0.2 < lp["recall"]  # plain Pearson: true links drowned
    assert lr["significant_pairs"] == 0 or lr["precision"] >= 0.5
    assert {"pct_in", "log2fc", "auroc", "annotation"} <= set(out["markers"].columns)
    assert {"domain", "n_spots", "r", "n_eff", "qval"} <= set(out["associations_domains"].columns)
    assert set(out["associations_domains"]["domain"]) <= set(labels)
    assert out["pathways"]["query"].str.startswith("domain_").any()
    assert len(s["top_markers"]) and len(s["top_associations"]) == 10
