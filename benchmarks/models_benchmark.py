"""Joint models side by side: ARI, NMI, spatial continuity, wall time and peak memory.

Three parts (each optional):

* ``demo``: every model on the demo samples of a finished run (``results/{sample}/align/
  paired.h5mu``, truth from ``results/demo/{sample}/truth``), domains by k-means without
  refinement (the demo config);
* ``visium``: one section at Visium scale (~4,000 spots × 2,000 genes × 500 m/z, synthetic
  with known domains), the per-section training-time target (< 60 s on CPU);
* ``scale``: 10^4, 3×10^4, 10^5 synthetic spots, a few epochs each, printing peak memory to
  show it grows linearly.

Each fit runs in its own process; ``data_rss_mb`` is its memory once the data are loaded,
``peak_rss_mb`` the peak during the fit (Linux: the peak is reset after loading), and
``model_peak_mb`` their difference, the model's own footprint.
Real data: ``--data-dir`` (default ``REPO/../shared/data/real``) holds no *paired* MSI + ST
section with domain annotations yet (see its README), so nothing real is scored; the script
says so. Published peers run when their environment's Python is given (``--peer-python`` for
SpatialGlue, ``--spatialmeta-python`` for SpatialMETA; see ``peer_*.py`` for how each installs).
Several finished runs (``--results`` with more than one folder, e.g. the demo simulated with other
``seed:`` values) give per-run rows plus each method's mean ARI and NMI over all demo sections.
Every row also goes to a TSV (``--out``, default ``RESULTS/benchmarks/models_benchmark.tsv`` of
the first run), which the summary report shows when it is rebuilt.

    python benchmarks/models_benchmark.py --parts demo visium scale
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = ("pca", "vae", "gnn", "transformer")


def synthetic_pair(n_spots: int, n_genes: int, n_mz: int, n_domains: int = 6, seed: int = 0):
    """Hexagonal Visium-like grid (100 µm pitch), Voronoi domains, NB gene counts and log-normal
    metabolite intensities with domain effects; returns (rna, msi, truth)."""
    import anndata as ad
    import pandas as pd
    from scipy.spatial import cKDTree

    from spatialfuse.constants import Key

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots / 0.866)))
    r, c = np.divmod(np.arange(side * side), side)
    xy = np.stack([c * 100.0 + (r % 2) * 50.0, r * 86.6], 1)[:n_spots]
    seeds = rng.uniform(xy.min(0), xy.max(0), (3 * n_domains, 2))
    truth = cKDTree(seeds).query(xy)[1] % n_domains
    eff_g = (rng.random((n_domains, n_genes)) < 0.05) * rng.uniform(1.0, 1.8, (n_domains, n_genes))
    mu = np.exp(rng.normal(0.3, 1.0, n_genes) + eff_g[truth]) * rng.lognormal(0, 0.3, (n_spots, 1))
    counts = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)
    lib = counts.sum(1, keepdims=True)
    rna = ad.AnnData(np.log1p(counts / np.maximum(lib, 1) * 1e4).astype(np.float32),
                     obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]),
                     var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    rna.layers[Key.layers.counts] = counts
    rna.obsm[Key.obsm.spatial] = xy
    eff_m = (rng.random((n_domains, n_mz)) < 0.1) * rng.uniform(0.9, 1.5, (n_domains, n_mz))
    inten = np.exp(rng.normal(0, 0.5, (n_spots, n_mz)) + eff_m[truth])
    msi = ad.AnnData(np.log1p(inten).astype(np.float32), obs=rna.obs.copy(),
                     var=pd.DataFrame(index=[f"mz{j}" for j in range(n_mz)]))
    msi.obsm[Key.obsm.spatial] = xy
    return rna, msi, truth


def synthetic_files(tmp: str, n_spots: int, n_genes: int, n_mz: int, score: bool = True) -> dict:
    """Write :func:`synthetic_pair` to ``tmp`` as two .h5ad files; the spec a job reads."""
    rna, msi, truth = synthetic_pair(n_spots, n_genes, n_mz)
    rna.obs["truth"] = truth
    rna.write_h5ad(f"{tmp}/rna_{n_spots}.h5ad")
    msi.write_h5ad(f"{tmp}/msi_{n_spots}.h5ad")
    return {"rna": f"{tmp}/rna_{n_spots}.h5ad", "msi": f"{tmp}/msi_{n_spots}.h5ad", "score": score}


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Forget the peak so far (Linux: clear_refs 5 resets VmHWM), so the peak measured after a
    fit is the data plus the model's own, not the data's generation; returns current RSS (MiB)."""
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _job(args) -> dict:
    kind, spec, model, params, seed = args
    import torch

    from spatialfuse.domains import domain_metrics, find_domains
    from spatialfuse.models import run_model

    torch.set_num_threads(2)
    if kind == "file":
        from spatialfuse.ingest import read_truth_domains
        from spatialfuse.io import read_paired

        rna, msi, _ = read_paired(spec["paired"])
        truth = read_truth_domains(spec["truth"], rna.obs_names)
    else:  # written by the parent (see ``synthetic_files``): no generation peak in this process
        import anndata as ad

        rna, msi = ad.read_h5ad(spec["rna"]), ad.read_h5ad(spec["msi"])
        truth = rna.obs["truth"].to_numpy()
    rss0 = _reset_peak_rss()
    t0 = time.perf_counter()
    out = run_model(model, rna, msi, params, seed=seed, device="auto")
    wall = time.perf_counter() - t0
    peak = _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"wall_s": wall, "epochs": out["metrics"].get("epochs_run", 0),
           "peak_rss_mb": peak, "data_rss_mb": rss0, "model_peak_mb": peak - rss0}
    if truth is not None and spec.get("score", True):
        xy = rna.obsm["spatial"]
        lab = find_domains(out["embedding"], xy, n_domains=len(np.unique(truth)), refine=False,
                           seed=seed)
        m = domain_metrics(lab, xy, truth)
        res.update(ari=m["ari"], nmi=m["nmi"], neighbour_agreement=m["neighbour_agreement"])
    return res


def run(kind, spec, model, params, seed=0) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_job, ((kind, spec, model, params, seed),))


PEERS = {"SpatialGlue": "peer_spatialglue.py", "SpatialMETA": "peer_spatialmeta.py"}


def run_peer(peer_python: str, paired: str, truth_dir: str, seed: int = 0,
             peer: str = "SpatialGlue") -> dict:
    """A published peer in its own virtual environment (``PEERS[peer]``); its embedding is
    clustered exactly like ours (k-means, no refinement)."""
    import subprocess
    import tempfile

    from spatialfuse.constants import Key
    from spatialfuse.domains import domain_metrics, find_domains
    from spatialfuse.ingest import read_truth_domains
    from spatialfuse.io import read_paired

    rna, msi, _ = read_paired(paired)
    truth = read_truth_domains(truth_dir, rna.obs_names)
    with tempfile.TemporaryDirectory() as tmp:
        msi = msi.copy()
        msi.obsm[Key.obsm.spatial] = rna.obsm[Key.obsm.spatial]
        rna.write_h5ad(f"{tmp}/rna.h5ad")
        msi.write_h5ad(f"{tmp}/msi.h5ad")
        t0 = time.perf_counter()
        p = subprocess.run([peer_python, str(REPO / "benchmarks" / PEERS[peer]),
                            f"{tmp}/rna.h5ad", f"{tmp}/msi.h5ad", f"{tmp}/emb.npy", str(seed)],
                           capture_output=True, text=True,
                           env={**os.environ, "SPATIALMETA_NO_TORCHVISION": "1"})
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
        wall = time.perf_counter() - t0
        emb = np.load(f"{tmp}/emb.npy")
    res = dict(kv.split("=") for kv in p.stdout.split() if "=" in kv)
    out = {"wall_s": float(res.get("wall_s", wall)), "peak_rss_mb": float(res.get("peak_rss_mb", 0))}
    xy = rna.obsm[Key.obsm.spatial]
    lab = find_domains(emb, xy, n_domains=len(np.unique(truth)), refine=False, seed=seed)
    m = domain_metrics(lab, xy, truth)
    out.update(ari=m["ari"], nmi=m["nmi"], neighbour_agreement=m["neighbour_agreement"])
    return out


def fmt(d: dict) -> str:
    return "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["demo", "visium", "scale"],
                    choices=["demo", "visium", "scale"])
    ap.add_argument("--results", nargs="+", default=[str(REPO / "results")],
                    help="finished demo run(s): their results folders")
    ap.add_argument("--data-dir", default=str(REPO / ".." / "shared" / "data" / "real"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--scale-sizes", nargs="+", type=int, default=[10_000, 30_000, 100_000])
    ap.add_argument("--scale-epochs", type=int, default=2)
    ap.add_argument("--peer-python", default=None,
                    help="python of a virtualenv with SpatialGlue (e.g. "
                         "/work/peers/spatialglue-venv/bin/python): also run it on the demo")
    ap.add_argument("--spatialmeta-python", default=None,
                    help="python of a virtualenv with SpatialMETA (see peer_spatialmeta.py for "
                         "how it installs): also run it on the demo")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="training seeds: on the demo, every method (peers too) is fitted once "
                         "per seed (our models' results vary with it as much as they differ)")
    ap.add_argument("--out", default=None,
                    help="TSV of every row printed (default: RESULTS/benchmarks/"
                         "models_benchmark.tsv, which the report shows when it is rebuilt)")
    a = ap.parse_args(argv)
    print(f"# models benchmark, {time.strftime('%Y-%m-%d %H:%M')}, machine may be shared")
    rows: list[dict] = []

    def emit(part: str, sample: str, method: str, res: dict) -> None:
        print(f"{part} {sample} {method}: " + fmt(res), flush=True)
        rows.append({"part": part, "sample": sample, "method": method, **res})
    for res in map(Path, a.results if "demo" in a.parts else []):
        samples = sorted(p.parent.parent.name for p in res.glob("*/align/paired.h5mu"))
        if not samples:
            print(f"demo: no {res}/*/align/paired.h5mu; run the demo first (snakemake --cores 2)")
        for s0 in samples:
            s = s0 if len(a.results) == 1 else f"{res.resolve().parent.name}/{s0}"
            spec = {"paired": str(res / s0 / "align" / "paired.h5mu"),
                    "truth": str(res / "demo" / s0 / "truth")}
            for seed in a.seeds:
                tag = s if len(a.seeds) == 1 else f"{s} seed={seed}"
                for m in a.models:
                    emit("demo", tag, m, run("file", spec, m, {}, seed=seed))
                if a.peer_python:
                    emit("demo", tag, "SpatialGlue",
                         run_peer(a.peer_python, spec["paired"], spec["truth"], seed=seed))
                if a.spatialmeta_python:
                    emit("demo", tag, "SpatialMETA",
                         run_peer(a.spatialmeta_python, spec["paired"], spec["truth"],
                                  seed=seed, peer="SpatialMETA"))
    real = Path(a.data_dir)
    print(f"real: {real}: no paired MSI + ST section with domain annotations (see its README); "
          "nothing real scored")
    tmp = tempfile.mkdtemp(prefix="sf_models_bench_")
    if "visium" in a.parts:
        spec = synthetic_files(tmp, 4000, 2000, 500)
        for m in a.models:
            emit("visium", "4000x2000x500", m, run("synthetic", spec, m, {}))
    if "scale" in a.parts:
        for n in a.scale_sizes:
            spec = synthetic_files(tmp, n, 500, 100, score=False)
            for m in a.models:
                p = {} if m == "pca" else {"max_epochs": a.scale_epochs, "max_steps": None,
                                           "val_fraction": 0.05}
                emit(f"scale ({a.scale_epochs} epochs)", f"n={n}", m,
                     run("synthetic", spec, m, p))
    shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        import pandas as pd

        demo = pd.DataFrame([r for r in rows if r["part"] == "demo" and "ari" in r])
        if len(demo):
            mean = demo.groupby("method", sort=False)[["ari", "nmi"]].mean()
            for m, r in mean.iterrows():
                emit("demo mean", f"{demo['sample'].nunique()} fits", m,
                     {"ari": float(r["ari"]), "nmi": float(r["nmi"])})
            wide = demo.pivot_table(index="sample", columns="method", values="ari")
            peers = [p for p in PEERS if p in wide]
            if peers:  # fits where one of ours scores above every peer (ties count as not)
                best_peer = wide[peers].max(1)
                for m in [m for m in a.models if m in wide]:
                    above = int((wide[m] > best_peer).sum())
                    tied = int((wide[m] == best_peer).sum())
                    each = ", ".join(f"{p}: above {int((wide[m] > wide[p]).sum())}, below "
                                     f"{int((wide[m] < wide[p]).sum())}" for p in peers)
                    print(f"demo: {m} above every peer in {above} of {len(wide)} fits "
                          f"(+{tied} tied); {each}")
        out = Path(a.out) if a.out else Path(a.results[0]) / "benchmarks" / "models_benchmark.tsv"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).round(4).to_csv(out, sep="\t", index=False)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
