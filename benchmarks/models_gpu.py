"""The neural models on a GPU: ``device: auto`` picks CUDA, fit/embed/predict run there, and how
long a Visium-scale section and a large one take. Needs only torch, numpy, scipy, pandas and
scikit-learn (no AnnData), so it runs in any CUDA torch environment::

    python benchmarks/models_gpu.py [--sizes 4000 100000]

Prints, per model and size: device, epochs, training seconds, peak GPU memory, k-means ARI of the
embedding against the synthetic domains.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_inputs(n: int, n_genes: int, n_mz: int, n_domains: int = 6, seed: int = 0):
    """Standardised ModelInputs on a hexagonal grid with Voronoi domains (+ the truth)."""
    from scipy.spatial import cKDTree

    from spatialfuse.models.data import ModelInputs, _size_factors, _standardise

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n / 0.866)))
    r, c = np.divmod(np.arange(side * side), side)
    xy = np.stack([c * 100.0 + (r % 2) * 50.0, r * 86.6], 1)[:n]
    truth = cKDTree(rng.uniform(xy.min(0), xy.max(0), (3 * n_domains, 2))).query(xy)[1] % n_domains
    eff = (rng.random((n_domains, n_genes)) < 0.05) * rng.uniform(1.0, 1.8, (n_domains, n_genes))
    mu = np.exp(rng.normal(0.3, 1.0, n_genes) + eff[truth])
    counts = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)
    lognorm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)
    eff_m = (rng.random((n_domains, n_mz)) < 0.1) * rng.uniform(0.9, 1.5, (n_domains, n_mz))
    msi = rng.normal(0, 0.5, (n, n_mz)) + eff_m[truth]
    zr, mr, sr = _standardise(lognorm)
    zm, mm, sm = _standardise(msi)
    inp = ModelInputs(rna=zr, msi=zm, rna_counts=counts, xy=xy,
                      obs_names=[str(i) for i in range(n)],
                      rna_features=[f"g{j}" for j in range(n_genes)],
                      msi_features=[f"m{j}" for j in range(n_mz)], rna_mean=mr, rna_sd=sr,
                      msi_mean=mm, msi_sd=sm, rna_size_factor=_size_factors(lognorm, counts))
    return inp, truth


def main(argv=None) -> None:
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from spatialfuse.models.api import fit, resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[4000, 100_000])
    ap.add_argument("--models", nargs="+", default=["vae", "gnn", "transformer"])
    a = ap.parse_args(argv)
    dev = resolve_device("auto")
    print(f"device auto -> {dev}" + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else ""))
    for n in a.sizes:
        genes, mz = (2000, 500) if n <= 10_000 else (500, 100)
        inp, truth = synthetic_inputs(n, genes, mz)
        held = np.random.default_rng(1).random(n) < 0.1
        for name in a.models:
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fm = fit(name, inp, {}, seed=0, device="auto", train_mask=~held)
            t_fit = time.perf_counter() - t0
            Z = fm.embed()
            pred = fm.predict_msi_from_rna()
            r = np.nanmedian([np.corrcoef(pred[:, j], inp.msi[held][:, j])[0, 1]
                              for j in range(mz)])
            lab = KMeans(len(np.unique(truth)), n_init=10, random_state=0).fit_predict(Z)
            peak = torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else float("nan")
            on = next(fm.module.parameters()).device
            print(f"n={n} genes={genes} m/z={mz} {name}: device={on} "
                  f"epochs={fm.metrics['epochs_run']} fit_s={t_fit:.1f} "
                  f"peak_gpu_mb={peak:.0f} ari={adjusted_rand_score(truth, lab):.3f} "
                  f"heldout_msi_median_r={r:.3f}", flush=True)


if __name__ == "__main__":
    main()
