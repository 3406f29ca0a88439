"""End-to-end: the Snakemake workflow on a tiny demo, selective rerun, early config errors.

These run real ``snakemake`` processes in a temporary working directory, the way a user would
(``snakemake -s <repo>/Snakefile -d <workdir>``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_utils import REPO, SNAKEMAKE, planned_jobs, set_dotted, smk

pytestmark = pytest.mark.workflow
#: The demo config trains every model family.
DEMO_MODELS = ("pca", "vae", "gnn", "transformer")


@pytest.fixture(scope="module")
def demo_run(tiny_demo_run):
    return tiny_demo_run


def test_demo_end_to_end_outputs(demo_run):
    d = demo_run
    for s in ("demo1", "demo2"):
        for f in ("ingest/st.h5ad", "ingest/msi.h5ad", "ingest/qc.json", "align/transform.json",
                  "align/msi_aligned.h5ad", "align/paired.h5mu", "align/qc.json",
                  "impute/metrics.json", "impute/unmeasured_msi.h5ad", "interpret/markers.tsv", "interpret/associations.tsv",
                  "interpret/associations_domains.tsv", "interpret/pathways.tsv",
                  "interpret/markers.png",
                  *(f"model/{mo}/{f}" for mo in DEMO_MODELS for f in (
                      "embedding.h5ad", "checkpoint.pt", "train_log.tsv", "metrics.json")),
                  *(f"domains/{mo}.tsv" for mo in DEMO_MODELS)):
            assert (d / "results" / s / f).exists(), f"{s}/{f} missing"
    m = pd.read_csv(d / "results" / "aggregate" / "metrics.tsv", sep="\t")
    ari = m.query("stage == 'domains' and metric == 'ari'")
    assert len(ari) == 2 * len(DEMO_MODELS) and (ari["value"] > 0.4).all()
    err = m.query("stage == 'align' and metric == 'truth_error_um_median'")["value"]
    assert len(err) == 2 and (err < 80).all()
    for f in ("conditions.tsv", "condition_domains.tsv", "figures/conditions.png"):
        assert (d / "results" / "aggregate" / f).exists(), f
    for s in ("demo1", "demo2"):  # spatial null: far fewer calls than plain Pearson
        it = json.loads((d / "results" / s / "interpret" / "summary.json").read_text())
        assert it["association_method"] == "spatial" and it["null_draws"] == 200
        assert it["associations_significant"] < it["associations_significant_pearson"] / 10
    html = (d / "results" / "report.html").read_text()
    assert "registration error" in html and "ARI pca" in html and "Provenance" in html
    assert "Cohort comparison" in html and "plain Pearson would call" in html
    assert "data:image/png;base64" in html and "<script src=" not in html  # self-contained
    # demo2's rectangular pixels (workflow_utils.TINY_DEMO2) went through every stage as such
    qc2 = json.loads((d / "results" / "demo2" / "align" / "qc.json").read_text())
    assert qc2["msi_pixel_size_xy_um"] == [40.0, 60.0] and not qc2["flagged"]
    assert "continuous centroid, 40 × 60 µm" in html


def test_paired_mudata_contract(demo_run):
    import anndata as ad
    import mudata as md

    md.set_options(pull_on_update=False)

    mu = md.read_h5mu(demo_run / "results" / "demo1" / "align" / "paired.h5mu")
    assert set(mu.mod) == {"rna", "msi"}
    assert list(mu.mod["rna"].obs_names) == list(mu.mod["msi"].obs_names)
    assert "counts" in mu.mod["rna"].layers and "mz" in mu.mod["msi"].var
    al = ad.read_h5ad(demo_run / "results" / "demo1" / "align" / "msi_aligned.h5ad")
    assert {"spatial", "spatial_native"} <= set(al.obsm) and {"x", "y"} <= set(al.obs)
    t = json.loads((demo_run / "results" / "demo1" / "align" / "transform.json").read_text())
    assert t["direction"] == "MSI um -> ST um" and len(t["affine"]) == 3


def test_nothing_to_do_after_run(demo_run):
    assert planned_jobs(demo_run) == set()


#: What each config section feeds, downstream included. ``report`` always reruns: its params
#: hold the whole config, which the report prints as provenance.
DOWNSTREAM = {
    "simulate_demo": ["ingest", "checksums"],  # checksums: provenance of the input files
    "checksums": ["report"],
    "ingest": ["align", "impute"],
    "align": ["impute", "model", "interpret", "aggregate"],
    "impute": ["aggregate"],  # impute trains its own per-fold models: no edge from model
    "model": ["domains", "aggregate"],
    "domains": ["interpret", "aggregate"],
    "interpret": ["aggregate"],
    "aggregate": ["report", "cohort"],  # cohort: the demo sheet names two conditions
    "cohort": ["report"],
    "report": ["all"],
}


def _with_downstream(*rules: str) -> set[str]:
    out, todo = set(), list(rules) + ["report"]
    while todo:
        r = todo.pop()
        if r not in out:
            out.add(r)
            todo.extend(DOWNSTREAM.get(r, []))
    return out


@pytest.mark.parametrize("section,edit,first_rules", [
    ("demo", {"demo__warp_um": 25.0}, ["simulate_demo"]),
    ("ingest", {"ingest__msi__mz_tolerance_ppm": 12.0}, ["ingest"]),
    ("align", {"align__min_coverage": 0.6}, ["align"]),
    ("impute", {"impute__alpha": 0.3}, ["impute"]),
    # the GNN: its domains feed interpret (interpret.domain_model), its settings impute's
    # denoising (impute.denoise_models)
    ("model", {"model__gnn__lr": 0.003}, ["model", "impute"]),
    ("domains", {"domains__refine": True}, ["domains"]),
    ("interpret", {"interpret__fdr": 0.1}, ["interpret"]),
    ("report", {"report__title": "Another title"}, ["report"]),
    ("seed", {"seed": 1}, ["simulate_demo", "align", "impute", "model", "domains", "interpret"]),
    ("device", {"device": "cpu"}, ["model", "impute"]),
])
def test_selective_rerun(demo_run, section, edit, first_rules):
    """Editing one config section reruns exactly the rules that use it and what depends on them."""
    cfg_path = demo_run / "config" / "config.yaml"
    original = cfg_path.read_text()
    try:
        cfg = yaml.safe_load(original)
        for dotted, value in edit.items():
            set_dotted(cfg, dotted, value)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert planned_jobs(demo_run) == _with_downstream(*first_rules)
    finally:
        cfg_path.write_text(original)
    assert planned_jobs(demo_run) == set()


def test_key_order_and_explicit_defaults_rerun_nothing(demo_run):
    """The same settings written in another key order, or with a default written out,
    change no value: nothing reruns (Snakemake compares params by their repr, which follows
    the key order; the workflow sorts the validated config's keys)."""
    cfg_path = demo_run / "config" / "config.yaml"
    original = cfg_path.read_text()
    try:
        cfg = yaml.safe_load(original)
        reordered = {k: cfg[k] for k in reversed(list(cfg))}
        for section in ("align", "impute", "model"):
            reordered[section] = {k: cfg[section][k] for k in reversed(list(cfg[section]))}
        cfg_path.write_text(yaml.safe_dump(reordered, sort_keys=False))
        assert planned_jobs(demo_run) == set()
        # impute.n_blocks at its schema default, written first in its section
        schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
        default = schema["properties"]["impute"]["properties"]["n_blocks"]["default"]
        assert "n_blocks" not in cfg["impute"]
        cfg["impute"] = {"n_blocks": default, **cfg["impute"]}
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert planned_jobs(demo_run) == set()
    finally:
        cfg_path.write_text(original)
    assert planned_jobs(demo_run) == set()


def test_model_edit_reruns_impute(demo_run):
    """impute refits the joint models of impute.models in its blocked CV, so their settings
    feed it; interpret reads the domains of interpret.domain_model (gnn) only, so a VAE edit
    leaves it alone."""
    cfg_path = demo_run / "config" / "config.yaml"
    original = cfg_path.read_text()
    try:
        cfg = yaml.safe_load(original)
        assert cfg["interpret"]["domain_model"] == "gnn"
        set_dotted(cfg, "model__vae__lr", 0.003)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert planned_jobs(demo_run) == _with_downstream("model", "impute") - {"interpret"}
    finally:
        cfg_path.write_text(original)
    assert planned_jobs(demo_run) == set()


@pytest.mark.parametrize("column,value,first_rules", [
    ("condition", "drugX", ["aggregate"]),  # cohort label: condition comparisons + report
    ("batch", "b2", ["cohort"]),  # conditions are compared within batches
    ("msi_pixel_size_um", "30", ["ingest"]),  # read by ingest: everything after it
])
def test_selective_rerun_samples_sheet(demo_run, column, value, first_rules):
    """A samples-sheet column reruns only the rules that read it (not every per-sample rule)."""
    sheet = demo_run / "config" / "samples.tsv"
    original = sheet.read_text()
    try:
        df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
        df.loc[df["sample"] == "demo1", column] = value
        df.to_csv(sheet, sep="\t", index=False)
        assert planned_jobs(demo_run) == _with_downstream(*first_rules)
    finally:
        sheet.write_text(original)


@pytest.mark.parametrize("script,first_rules", [
    ("impute.py", ["impute"]),
    ("domains.py", ["domains"]),
])
def test_script_edit_reruns_its_rule(demo_run, script, first_rules):
    """Snakemake's code trigger: editing a rule's script reruns that rule (and what follows).
    The script is restored byte for byte, modification time included."""
    path = REPO / "scripts" / script
    stat, original = path.stat(), path.read_bytes()
    try:
        path.write_bytes(original + b"\n# edited by tests/test_workflow.py\n")
        p = smk(demo_run, "-n")
        assert "code has changed since last execution" in p.stdout
        assert planned_jobs(demo_run) == _with_downstream(*first_rules)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(demo_run) == set()


def test_snakemake_report(demo_run):
    p = smk(demo_run, "--report", "results/snakemake_report.html")
    html = (demo_run / "results" / "snakemake_report.html").read_text(errors="replace")
    assert "Registration" in html and "Ingest" in html
    # the resources read input sizes without Snakemake's asynchronous input.size_mb, which
    # fails inside --report and printed a RuntimeWarning per rule (spatialfuse.jobcost.input_mb)
    assert "never awaited" not in p.stdout + p.stderr


def test_lint_and_format():
    p = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(REPO), "--lint"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    snakefmt = Path(sys.executable).parent / "snakefmt"
    files = [str(REPO / "Snakefile")] + [str(f) for f in (REPO / "workflow" / "rules").glob("*.smk")]
    p = subprocess.run([str(snakefmt), "--check", *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # pyflakes rules: unused imports and variables, undefined names, shadowed definitions
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache",
                        *(str(REPO / d) for d in ("spatialfuse", "scripts", "benchmarks", "tests"))],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_msi_missing_part_of_the_section_gets_metabolites_from_genes(tmp_path):
    """A demo section whose MSI raster is cropped: the ST spots align cannot pair get their
    metabolites predicted from their genes, in their own file, counted in metrics.json."""
    import anndata as ad
    import mudata as md

    from workflow_utils import make_workdir

    sheet = "\n".join((REPO / "config" / "samples.tsv").read_text().splitlines()[:2]) + "\n"
    d = make_workdir(tmp_path, samples_tsv=sheet, demo__samples__demo1__msi_crop_frac=0.35,
                     impute__models=[], impute__denoise_models=[])
    smk(d, "--cores", "2", "--until", "impute")
    res = d / "results" / "demo1"
    qc = json.loads((res / "align" / "qc.json").read_text())
    paired = md.read_h5mu(res / "align" / "paired.h5mu")
    st = ad.read_h5ad(res / "ingest" / "st.h5ad")
    un = ad.read_h5ad(res / "impute" / "unmeasured_msi.h5ad")
    metrics = json.loads((res / "impute" / "metrics.json").read_text())
    assert qc["spots_low_coverage"] > 0 and un.n_obs == qc["spots_low_coverage"]
    assert set(un.obs_names) == set(st.obs_names) - set(paired["rna"].obs_names)
    assert list(un.var_names) == list(paired["msi"].var_names)
    method = metrics["crossmodal"]["rna_to_msi"]["best_method"]
    info = metrics["unmeasured_spots"]
    assert info["n_spots"] == un.n_obs and info["method"] == method
    assert pd.notna(un.X).all() and f"imputed_{method}_from_rna" in un.layers
    assert (un.obs["msi_coverage"] < 0.5).all() and (un.obs["distance_to_measured_um"] > 0).all()


def test_visium_hd_section_from_space_ranger_hd_output(tmp_path):
    """A demo sample written as Space Ranger HD output (outs/binned_outputs/square_016um/), kept
    as bins (``visium_hd_pool_um: null``), runs through ingest, registration (the bins pooled into super-bins), exact square-bin pairing and
    the imputation's cross-validation, with the tolerances of the registration in µm as on
    Visium (not in 16 µm bins)."""
    import mudata as md

    from workflow_utils import make_workdir

    sheet = "\n".join((REPO / "config" / "samples.tsv").read_text().splitlines()[:2]) + "\n"
    d = make_workdir(tmp_path, samples_tsv=sheet, demo__samples__demo1__st_bin_um=16,
                     demo__capture_size_um=1400.0, ingest__st__visium_hd_bin_um=16,
                     ingest__st__visium_hd_pool_um=None, impute__models=[],
                     impute__denoise_models=[])
    smk(d, "--cores", "2", "--until", "impute")
    res = d / "results" / "demo1"
    assert (d / "results/demo/demo1/spaceranger/binned_outputs/square_016um/spatial/"
            "tissue_positions.parquet").is_file()
    meta = json.loads((res / "ingest" / "qc.json").read_text())["st_meta"]
    assert meta["platform"] == "visium_hd" and meta["spot_diameter_um"] == 16.0
    qc = json.loads((res / "align" / "qc.json").read_text())
    assert qc["spot_diameter_um"] == 16.0 and not qc["flagged"], qc.get("warnings")
    assert qc["truth_error_pixels_median"] < 1.0  # 30 µm MSI pixels
    assert qc["affine_uncertainty"]["block_um"] == 400.0  # 4 × 100 µm, not 4 × a super-bin
    cov = pd.read_csv(res / "align" / "coverage.tsv", sep="\t", index_col=0)
    assert cov.index.str.startswith("s_016um_").all()
    # a 16 µm bin under 30 µm MSI pixels is covered by 1-4 of them
    assert cov.loc[~cov["msi_low_coverage"], "msi_n_pixels"].between(1, 4).all()
    paired = md.read_h5mu(res / "align" / "paired.h5mu")
    assert paired["rna"].n_obs == (~cov["msi_low_coverage"]).sum()
    metrics = json.loads((res / "impute" / "metrics.json").read_text())
    assert metrics["crossmodal"]["rna_to_msi"]["best_method"] in ("ridge", "knn")


def test_visium_hd_bins_pooled_into_squares_run_to_the_aggregate(tmp_path):
    """``ingest.st.visium_hd_pool_um``: the 16 µm bins of a Space Ranger HD demo sample are summed
    into 48 µm squares at ingest, and every later stage (registration, pairing, imputation,
    domains against the per-bin truth, the cross-sample tables) works on the squares."""
    import anndata as ad

    from workflow_utils import make_workdir

    sheet = "\n".join((REPO / "config" / "samples.tsv").read_text().splitlines()[:2]) + "\n"
    d = make_workdir(tmp_path, samples_tsv=sheet, demo__samples__demo1__st_bin_um=16,
                     demo__capture_size_um=1400.0, ingest__st__visium_hd_bin_um=16,
                     ingest__st__visium_hd_pool_um=48, impute__models=[], impute__denoise_models=[],
                     model__models=["pca"], interpret__domain_model="pca")
    smk(d, "--cores", "2", "--until", "aggregate")
    res = d / "results" / "demo1"
    meta = json.loads((res / "ingest" / "qc.json").read_text())["st_meta"]
    assert meta["spot_diameter_um"] == 48.0 and meta["pooled_from_um"] == 16.0
    assert meta["pool_factor"] == 3
    st = ad.read_h5ad(res / "ingest" / "st.h5ad")
    assert st.obs_names.str.startswith("s_048um_").all()
    assert st.obs["tissue_fraction"].between(1 / 9, 1).all()
    assert (st.obs["tissue_fraction"] < 1).any()  # squares on the tissue's edge
    qc = json.loads((res / "align" / "qc.json").read_text())
    assert qc["spot_diameter_um"] == 48.0 and not qc["flagged"], qc.get("warnings")
    assert qc["truth_error_pixels_median"] < 1.0  # 30 µm MSI pixels
    cov = pd.read_csv(res / "align" / "coverage.tsv", sep="\t", index_col=0)
    assert set(cov.index) == set(st.obs_names)
    # a 48 µm square under 30 µm MSI pixels is touched by 4-9 of them
    assert cov.loc[~cov["msi_low_coverage"], "msi_n_pixels"].between(4, 9).all()
    dom = json.loads((res / "domains" / "pca_metrics.json").read_text())
    assert dom["ari"] > 0.3  # scored against the bins' truth, each square taking its bins' majority
    spots = pd.read_csv(d / "results" / "aggregate" / "domains.tsv", sep="\t")
    assert "truth" in spots.columns and spots["truth"].notna().all()
