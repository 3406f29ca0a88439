"""Helpers for tests that run the real ``snakemake`` on a tiny demo in a temporary workdir.

Every run is ``snakemake -s <repo>/Snakefile -d <workdir>``, the way a user runs the pipeline on
their own project folder; the workdir holds ``config/`` and receives ``results/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

#: The demo shrunk to ~6 minutes for both samples on 2 cores (2026-12-06: 379 s in CI with
#: TINY_IMPUTE; 475 s with the default fold fits, of which the two impute jobs 120 s each).
TINY_DEMO = dict(capture_size_um=1800.0, n_genes=120, n_metabolites=30, n_links=5, n_domains=4)
#: Impute's fold fits on the tiny demo's ~100 training spots, shortened: every joint model is
#: still fitted per fold, in worker processes, so determinism, resume and the cluster run cover
#: them, at 120-150 optimiser steps instead of 400 (the impute job 73 s instead of 120 s on 2
#: cores, 83 s CPU instead of 200 s). The workflow tests check the plumbing, not the scores.
TINY_IMPUTE = dict(model_max_steps=150, model_min_epochs=20)
#: demo2 of the tiny demo is imaged with rectangular pixels (40 µm along x, as in the repo's
#: config, 60 µm along y), so every workflow test runs one such sample end to end: the imzML
#: states both sizes, and ingest, registration, matching and the report work per axis.
TINY_DEMO2 = dict(msi_pixel_size_y_um=60.0)

#: Metrics that measure time or memory, not results: excluded from determinism comparisons.
TIMING_METRIC = re.compile(
    r"(^|[._])(seconds|secs?|elapsed(_s)?|runtime(_s)?|duration(_s)?|wall(_time)?(_s)?|"
    r"time(_s)?|[a-z]+_seconds|peak_(rss|mem)\w*|max_rss\w*)$")


def set_dotted(cfg: dict, dotted: str, value) -> None:
    """``set_dotted(cfg, "model__pca__n_comps", 12)`` sets cfg["model"]["pca"]["n_comps"]."""
    node = cfg
    *head, last = dotted.split("__")
    for k in head:
        node = node.setdefault(k, {})
    node[last] = value


def make_workdir(d: Path, samples_tsv: str | None = None, **edits) -> Path:
    """A workdir with the repo's config shrunk to the tiny demo, plus ``edits`` (dotted keys)."""
    d = Path(d)
    (d / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["demo"].update(TINY_DEMO)
    cfg["demo"].setdefault("samples", {}).setdefault("demo2", {}).update(TINY_DEMO2)
    cfg["domains"]["n_domains"] = 4
    cfg["impute"].update(TINY_IMPUTE)
    for dotted, value in edits.items():
        set_dotted(cfg, dotted, value)
    (d / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (d / "config" / "samples.tsv").write_text(
        samples_tsv if samples_tsv is not None else (REPO / "config" / "samples.tsv").read_text())
    return d


def smk_cmd(d: Path, *args) -> list[str]:
    return SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(d), *args]


def smk(d: Path, *args, check=True, timeout=900, env=None) -> subprocess.CompletedProcess:
    """Run snakemake in workdir ``d``; raise with the tail of its output if it fails."""
    cmd = smk_cmd(d, *args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def planned_jobs(d: Path, *args) -> set[str]:
    """Rules a dry run would execute (parsed from the 'Job stats' table)."""
    out = smk(d, "-n", *args).stdout
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    rules = set()
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            rules.add(m.group(1))
    return rules


def read_metrics(d: Path) -> pd.DataFrame:
    """``results/aggregate/metrics.tsv`` without timing/memory metrics, in a stable order."""
    m = pd.read_csv(Path(d) / "results" / "aggregate" / "metrics.tsv", sep="\t",
                    keep_default_na=False)
    timing = m["metric"].astype(str).map(lambda k: TIMING_METRIC.search(k) is not None)
    return (m[~timing].sort_values(["sample", "stage", "model", "metric"])
            .reset_index(drop=True))


def key_arrays(d: Path) -> dict[str, np.ndarray]:
    """The numbers downstream of every stage, per sample: transform, paired MSI on spots,
    imputation scores, embeddings, domain labels, association statistics."""
    import anndata as ad
    import mudata as md

    md.set_options(pull_on_update=False)
    res = Path(d) / "results"
    out = {}
    samples = sorted(p.parent.parent.name for p in res.glob("*/align/transform.json"))
    for s in samples:
        r = res / s
        out[f"{s}/transform"] = np.asarray(
            json.loads((r / "align" / "transform.json").read_text())["affine"], float)
        mu = md.read_h5mu(r / "align" / "paired.h5mu")
        for mod in ("rna", "msi"):
            X = mu.mod[mod].X
            out[f"{s}/paired/{mod}"] = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        sc = pd.read_csv(r / "impute" / "feature_scores.tsv", sep="\t")
        out[f"{s}/impute/scores"] = sc.select_dtypes("number").to_numpy()
        for emb in sorted((r / "model").glob("*/embedding.h5ad")):
            a = ad.read_h5ad(emb)
            for k, v in a.obsm.items():
                out[f"{s}/model/{emb.parent.name}/{k}"] = np.asarray(v)
        for lab in sorted((r / "domains").glob("*.tsv")):
            out[f"{s}/domains/{lab.stem}"] = pd.read_csv(lab, sep="\t").to_numpy()
        assoc = pd.read_csv(r / "interpret" / "associations.tsv", sep="\t")
        out[f"{s}/interpret/associations"] = assoc.select_dtypes("number").to_numpy()
    return out


def assert_same_results(a: Path, b: Path) -> None:
    """Two runs gave numerically identical results (timing metrics excluded)."""
    pd.testing.assert_frame_equal(read_metrics(a), read_metrics(b), check_exact=True)
    ka, kb = key_arrays(a), key_arrays(b)
    assert ka.keys() == kb.keys()
    for k in ka:
        np.testing.assert_array_equal(ka[k], kb[k], err_msg=k)


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), keyed by path."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out
