"""Cluster execution: the SLURM profile runs the tiny demo on a real one-node SLURM cluster.

The cluster (munged + slurmctld + slurmd from Debian's packages, started by
``tests/slurm_localhost.py``) needs root and the packages, which ``.ci/run`` installs; without
them the cluster tests are skipped, except where ``SPATIALFUSE_REQUIRE_SLURM=1`` (CI) turns the
skip into a failure. Every snakemake call runs under ``timeout -k`` so that a status check that
never returns cannot hang the suite.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from slurm_localhost import NODE_CPUS, Cluster, missing_tools
from workflow_utils import REPO, assert_same_results, make_workdir, smk, smk_cmd

pytestmark = pytest.mark.workflow

PROFILE = REPO / "profiles" / "slurm"
MISSING = missing_tools()
REQUIRED = os.environ.get("SPATIALFUSE_REQUIRE_SLURM") == "1"
needs_slurm = pytest.mark.skipif(
    bool(MISSING) and not REQUIRED,
    reason=f"no local SLURM test cluster possible (missing: {', '.join(MISSING)}); "
           "`.ci/run` installs slurmctld slurmd slurm-client munge")


def test_slurm_profile_settings():
    """The profile uses the executor plugin with a status command that works without
    accounting storage, and options the installed plugin knows."""
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"
    assert {"mem_mb", "runtime"} <= set(prof["default-resources"])
    help_text = subprocess.run(smk_cmd(REPO, "--help"), capture_output=True, text=True).stdout
    for key in prof:
        assert f"--{key}" in help_text, f"profile option '{key}' unknown to this snakemake"
    local = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
    for key in local:
        assert f"--{key}" in help_text, f"local profile option '{key}' unknown"


def _job_resources(dry_run_stdout: str) -> list[tuple[str, str, dict]]:
    """(rule, wildcards, resources) of every job in a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", dry_run_stdout):
        m = re.match(r"rule (\w+):", block)
        if not m:
            continue
        wc = re.search(r"wildcards: (.*)", block)
        res = re.search(r"resources: (.*)", block)
        pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.append((m.group(1), wc.group(1) if wc else "", pairs))
    return jobs


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_every_rule_declares_resources_and_gpu_only_for_cuda_training(tmp_path, device):
    """threads/mem_mb/runtime on every rule (what sbatch receives); a GPU only for the
    neural models (training, and their cross-validation in impute) and only with
    ``device: cuda``, so CPU-only clusters never wait for one."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    models = schema["properties"]["model"]["properties"]["models"]["items"]["enum"]
    d = make_workdir(tmp_path, device=device, model__models=models)
    jobs = _job_resources(smk(d, "-n", "--profile", str(PROFILE)).stdout)
    rules = {r for r, _, _ in jobs}
    assert rules >= {"simulate_demo", "ingest", "align", "impute", "model", "domains",
                     "interpret", "aggregate", "report"}
    for rule, wc, res in jobs:
        if rule == "all":
            continue
        assert "mem_mb" in res and "runtime" in res, f"{rule} lacks mem_mb/runtime: {res}"
        if rule == "model":
            model = re.search(r"model=(\w+)", wc).group(1)
            expected = int(device == "cuda" and model != "pca")
            assert int(res["gpu"]) == expected, (model, device, res)
        elif rule == "impute":  # refits the joint models in its cross-validation
            assert int(res["gpu"]) == int(device == "cuda"), (device, res)
        else:
            assert int(res.get("gpu", 0)) == 0
    smk_files = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    n_rules = len(re.findall(r"^rule \w+:", smk_files, re.M))
    assert len(re.findall(r"^    threads: ", smk_files, re.M)) == n_rules


def test_impute_runtime_request_follows_the_sections_spots(tmp_path, tiny_demo_run):
    """The impute job's ``runtime`` and ``mem_mb`` are read from align's coverage table once it
    exists (one row per ST spot): a Visium HD-sized section asks for hours and tens of GB, a
    demo section for the minimum."""
    from spatialfuse.impute.stage import DEFAULTS
    from spatialfuse.jobcost import (IMPUTE_MEM_SAFETY, IMPUTE_MIN_MINUTES, impute_fit_steps,
                                     impute_mem_mb, impute_runtime_minutes)

    d = tmp_path / "wd"
    shutil.copytree(tiny_demo_run, d, symlinks=True)  # the shared run stays as it was
    cov = d / "results" / "demo1" / "align" / "coverage.tsv"
    head = cov.read_text().splitlines()[0]
    cov.write_text(head + "\n" + "".join(f"s{i}\t1.0\t4\tFalse\n" for i in range(60_000)))
    jobs = _job_resources(smk(d, "-n", "--profile", str(PROFILE), "--forcerun", "impute").stdout)
    runtime = {wc: int(res["runtime"]) for rule, wc, res in jobs if rule == "impute"}
    assert set(runtime) == {"sample=demo1", "sample=demo2"}, jobs
    fits = 5 * 3 + 5 * 1  # the default impute: 5 blocks × 3 models, 5 folds × the GNN
    steps = impute_fit_steps(60_000, DEFAULTS)  # 30 epochs need more than the limit: 2,000
    assert steps == DEFAULTS["model_min_epochs_max_steps"]
    assert runtime["sample=demo1"] == impute_runtime_minutes(60_000, fits, 1, steps) > 2 * IMPUTE_MIN_MINUTES
    assert runtime["sample=demo2"] == IMPUTE_MIN_MINUTES
    # memory likewise: the HD-sized section asks for its estimated peak (the default config:
    # 3 cross-modal models, 2,000 scored genes), the demo section for the floor by input size
    mem = {wc: int(res["mem_mb"]) for rule, wc, res in jobs if rule == "impute"}
    est = math.ceil(IMPUTE_MEM_SAFETY * impute_mem_mb(60_000, 3, True, 2000))
    assert mem["sample=demo1"] == est > 16_000
    assert 4000 <= mem["sample=demo2"] < 5000
    # with 4 threads (a dry run has 1 core unless told): the fits in 4 worker processes, in
    # rounds (both CVs' 20 fits submitted together: 5 rounds), each worker's memory on top
    jobs = _job_resources(smk(d, "-n", "--profile", str(PROFILE), "--forcerun", "impute",
                              "--cores", "4").stdout)
    res4 = {wc: res for rule, wc, res in jobs if rule == "impute"}
    assert int(res4["sample=demo1"]["runtime"]) == impute_runtime_minutes(60_000, 5, 1, steps)
    assert impute_runtime_minutes(60_000, 5, 1, steps) < runtime["sample=demo1"]
    assert int(res4["sample=demo1"]["mem_mb"]) == math.ceil(
        IMPUTE_MEM_SAFETY * impute_mem_mb(60_000, 3, True, 2000, workers=4)) > est


@pytest.fixture(scope="module")
def slurm_cluster():
    if MISSING:
        pytest.fail(f"SPATIALFUSE_REQUIRE_SLURM=1 but the cluster cannot start: missing {MISSING}")
    root = Path(tempfile.mkdtemp(prefix="spatialfuse-slurm-"))
    cluster = Cluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(remove=True)


def run_on_slurm(cluster: Cluster, d: Path, *args, limit_s: int = 840):
    """snakemake --profile profiles/slurm in workdir ``d``, killed after ``limit_s`` (a guard
    against a hanging executor, not a speed target: the whole tiny demo through the one-node
    cluster took ~550-600 s on a loaded 2-core CI machine, its two impute jobs ~185 s each).

    Status checks start 5 s after a submission instead of the profile's 20 s (the plugin then
    adds 10 s per check that finds nothing finished): the demo's jobs take ~12 s in SLURM.
    """
    cmd = ["timeout", "-k", "20", str(limit_s)] + smk_cmd(
        d, "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "5",
        # the impute job asks for up to 4 CPUs (its fit workers); this node has NODE_CPUS, and
        # sbatch refuses a job no node can hold: what a site with small nodes sets too
        "--set-threads", f"impute={NODE_CPUS}", *args)
    return subprocess.run(cmd, env=cluster.env(), capture_output=True, text=True,
                          timeout=limit_s + 60)


@needs_slurm
def test_demo_runs_through_slurm(slurm_cluster, tmp_path, tiny_demo_run):
    d = make_workdir(tmp_path)
    p = run_on_slurm(slurm_cluster, d)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-6000:] + "\n".join(slurm_cluster.logs())
    assert "Falling back to 'sacct'" not in log
    total = int(re.search(r"^total\s+(\d+)", log, re.M).group(1))
    submitted = len(re.findall(r"submitted with SLURM jobid", log))
    assert submitted == total - 1, f"{submitted} of {total} jobs went through sbatch"  # not 'all'
    assert (d / "results" / "report.html").exists()
    # the cluster computes exactly what the local run did
    assert_same_results(tiny_demo_run, d)


@needs_slurm
def test_bad_input_error_reaches_the_user_from_a_slurm_job(slurm_cluster, tmp_path):
    """A job that fails on the cluster shows the pipeline's one-line error in snakemake's
    output (the profile's show-failed-logs prints the rule log), and leaves no outputs."""
    d = make_workdir(tmp_path, samples_tsv="sample\tst\tmsi\nS1\tdata/st.h5ad\tdata/m.imzML\n")
    (d / "data").mkdir()
    (d / "data" / "st.h5ad").write_text("this is not HDF5\n")
    (d / "data" / "m.imzML").write_text("<mzML/>\n")
    (d / "data" / "m.ibd").write_bytes(b"\0" * 16)
    p = run_on_slurm(slurm_cluster, d, "--retries", "0", "results/S1/ingest/qc.json",
                     limit_s=240)
    log = p.stdout + p.stderr
    assert p.returncode != 0
    assert "sample 'S1', file 'data/st.h5ad': not a readable .h5ad file" in log, log[-4000:]
    assert not [f for f in (d / "results").rglob("S1/ingest/*")], "partial ingest outputs left"
