"""End-to-end: the Snakemake workflow on a tiny demo, selective rerun, early config errors.

These run real ``snakemake`` processes in a temporary working directory, the way a user would
(``snakemake -s <repo>/Snakefile -d <workdir>``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY_DEMO = dict(capture_size_um=1800.0, n_genes=120, n_metabolites=30, n_links=5, n_domains=4)


def make_workdir(d: Path, **edits) -> Path:
    (d / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["demo"].update(TINY_DEMO)
    cfg["domains"]["n_domains"] = 4
    for dotted, value in edits.items():
        node = cfg
        *head, last = dotted.split("__")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    (d / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (d / "config" / "samples.tsv").write_text((REPO / "config" / "samples.tsv").read_text())
    return d


def smk(d: Path, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(d), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def planned_jobs(d: Path) -> set[str]:
    """Rules a dry run would execute (parsed from the 'Job stats' table)."""
    out = smk(d, "-n").stdout
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    rules = set()
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            rules.add(m.group(1))
    return rules


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = make_workdir(tmp_path_factory.mktemp("wf"))
    smk(d, "--cores", "2")
    return d


def test_demo_end_to_end_outputs(demo_run):
    d = demo_run
    for s in ("demo1", "demo2"):
        for f in ("ingest/st.h5ad", "ingest/msi.h5ad", "ingest/qc.json", "align/transform.json",
                  "align/msi_aligned.h5ad", "align/paired.h5mu", "align/qc.json",
                  "impute/metrics.json", "model/pca/embedding.h5ad", "model/pca/checkpoint.pt",
                  "model/pca/train_log.tsv", "model/pca/metrics.json", "domains/pca.tsv",
                  "interpret/markers.tsv", "interpret/associations.tsv", "interpret/pathways.tsv"):
            assert (d / "results" / s / f).exists(), f"{s}/{f} missing"
    m = pd.read_csv(d / "results" / "aggregate" / "metrics.tsv", sep="\t")
    ari = m.query("stage == 'domains' and metric == 'ari'")
    assert len(ari) == 2 and (ari["value"] > 0.4).all()
    err = m.query("stage == 'align' and metric == 'truth_error_um_median'")["value"]
    assert len(err) == 2 and (err < 80).all()
    html = (d / "results" / "report.html").read_text()
    assert "registration error" in html and "ARI pca" in html and "Provenance" in html
    assert "data:image/png;base64" in html and "<script src=" not in html  # self-contained


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


@pytest.mark.parametrize("edit,expected", [
    ({"model__pca__n_comps": 12}, {"model", "domains", "interpret", "aggregate", "report", "all"}),
    ({"impute__alpha": 0.3}, {"impute", "aggregate", "report", "all"}),
    ({"domains__refine": False}, {"domains", "interpret", "aggregate", "report", "all"}),
    ({"align__min_coverage": 0.6}, {"align", "impute", "model", "domains", "interpret",
                                    "aggregate", "report", "all"}),
])
def test_selective_rerun(demo_run, edit, expected):
    """Editing one config section reruns exactly that stage and what depends on it."""
    cfg_path = demo_run / "config" / "config.yaml"
    original = cfg_path.read_text()
    try:
        cfg = yaml.safe_load(original)
        for dotted, value in edit.items():
            node = cfg
            *head, last = dotted.split("__")
            for k in head:
                node = node.setdefault(k, {})
            node[last] = value
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert planned_jobs(demo_run) == expected
    finally:
        cfg_path.write_text(original)


def test_snakemake_report(demo_run):
    smk(demo_run, "--report", "results/snakemake_report.html")
    html = (demo_run / "results" / "snakemake_report.html").read_text(errors="replace")
    assert "Registration" in html and "Ingest" in html


def test_bad_config_stops_before_any_job(tmp_path):
    d = make_workdir(tmp_path, impute__k=0, model__models=["pca", "bert"])
    p = smk(d, "--cores", "1", check=False)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "impute.k: 0 is less than the minimum of 1" in err
    assert "model.models.1: 'bert' is not one of" in err
    assert not (d / "results").exists()


def test_missing_input_names_sample_and_path(tmp_path):
    d = make_workdir(tmp_path)
    (d / "config" / "samples.tsv").write_text(
        "sample\tst\tmsi\nS9\tdata/nowhere/outs\tdata/S9.imzML\n")
    p = smk(d, "-n", check=False)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "sample 'S9': st path 'data/nowhere/outs' does not exist" in err
    assert "sample 'S9': msi path 'data/S9.imzML' does not exist" in err


def test_lint_and_format():
    p = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(REPO), "--lint"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    snakefmt = Path(sys.executable).parent / "snakefmt"
    files = [str(REPO / "Snakefile")] + [str(f) for f in (REPO / "workflow" / "rules").glob("*.smk")]
    p = subprocess.run([str(snakefmt), "--check", *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
