"""Provenance of a run: pipeline version, package versions, seeds, input checksums, run times."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

#: Packages whose versions the report lists first (all installed distributions follow, folded)
PACKAGES = ["spatialfuse", "numpy", "scipy", "pandas", "anndata", "mudata", "scanpy",
            "scikit-learn", "umap-learn", "torch", "matplotlib", "pyimzML", "igraph", "snakemake"]

#: Files of a Space Ranger folder that are never read (and can be tens of GB)
_SKIP_SUFFIXES = (".bam", ".bai", ".cloupe", ".crai", ".cram")

REPO = Path(__file__).resolve().parents[2]


def git_version(repo: str | Path = REPO) -> dict[str, str]:
    """``describe`` (tag/commit, ``-dirty`` when the checkout has uncommitted edits) and the full
    commit hash of the pipeline's own repository (not the working directory's)."""
    out = {}
    for key, cmd in (("describe", ["git", "describe", "--always", "--dirty", "--tags"]),
                     ("commit", ["git", "rev-parse", "HEAD"])):
        try:
            r = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=10)
            out[key] = r.stdout.strip() if r.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            out[key] = ""
    if not out["describe"]:
        out["describe"] = "unknown (not a git checkout)"
    return out


def package_versions(names: list[str] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in names:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def all_distributions() -> pd.DataFrame:
    """Every installed Python distribution and its version (the environment, pip-freeze style)."""
    rows = {(d.metadata["Name"] or "?"): d.version for d in metadata.distributions()}
    return pd.DataFrame(sorted(rows.items(), key=lambda kv: kv[0].lower()),
                        columns=["package", "version"])


def seeds(config: dict, prefix: str = "") -> dict[str, object]:
    """Every config value whose key names a seed (``seed``, ``*_seed``), by dotted path."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(seeds(v, key + "."))
        elif str(k) == "seed" or str(k).endswith("_seed"):
            out[key] = v
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def input_files(path: str | Path) -> list[Path]:
    """The files of an input: the file itself, or every file under a folder except hidden files
    (e.g. Snakemake's timestamps), alignment files and Loupe bundles that no stage reads."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and not f.name.endswith(_SKIP_SUFFIXES))


def input_checksums(inputs: dict[str, list[str] | str], sample: str) -> pd.DataFrame:
    """SHA-256 and size of every file of a sample's inputs. ``inputs``: role (st, msi, ibd,
    landmarks, truth) → path(s)."""
    rows = []
    for role, paths in inputs.items():
        for p in [paths] if isinstance(paths, (str, Path)) else paths:
            for f in input_files(p):
                rows.append((sample, role, str(f), f.stat().st_size, sha256_file(f)))
    return pd.DataFrame(rows, columns=["sample", "input", "file", "bytes", "sha256"])


def rule_runtimes(bench_dir: str | Path = "results/benchmarks") -> pd.DataFrame:
    """Wall time and peak memory of every job from Snakemake's ``benchmark:`` tables."""
    rows = []
    for f in sorted(Path(bench_dir).glob("*/*.tsv")):
        try:
            b = pd.read_csv(f, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
            continue
        if len(b) and "s" in b:
            last = pd.to_numeric(b.iloc[-1], errors="coerce")
            rows.append((f.parent.name, f.stem, float(last["s"]),
                         float(last.get("max_rss", float("nan")))))
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])
