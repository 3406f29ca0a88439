"""Run the published SpatialGlue (PyPI ``SpatialGlue``) on one paired section; run it with the
Python of a separate virtual environment where SpatialGlue is installed (never this project's)::

    /work/peers/spatialglue-venv/bin/python benchmarks/peer_spatialglue.py rna.h5ad msi.h5ad out.npy

Inputs: ``rna.h5ad`` with raw counts in ``layers["counts"]`` and ``obsm["spatial"]``;
``msi.h5ad`` with log-normalised intensities in ``X``. Preprocessing follows SpatialGlue's
tutorial for spot data (RNA: normalise, log1p, scale, PCA; second modality: scale, PCA, both to
the same number of components), then ``Train_SpatialGlue(datatype="SPOTS")`` (its defaults:
600 full-batch epochs). Writes the embedding (``.npy``); prints wall time and peak memory.
``models_benchmark.py --peer-python`` calls this and clusters the embedding like ours.

Installing: SpatialGlue 1.1.5 imports only packages this project pins already (torch, scanpy,
anndata, scikit-learn, scipy, matplotlib, seaborn, tqdm), so a separate virtualenv is not needed:
``pip install --no-deps --target /tmp/sgpkg SpatialGlue`` and a two-line wrapper as the peer's
Python (``PYTHONPATH=/tmp/sgpkg exec .venv/bin/python "$@"``) keep it out of this project's
environment.
"""

import resource
import sys
import time

import numpy as np


def main(rna_path: str, msi_path: str, out_path: str, seed: int = 0) -> None:
    import anndata as ad
    import scanpy as sc
    import torch
    from SpatialGlue.preprocess import construct_neighbor_graph, fix_seed, pca
    from SpatialGlue.SpatialGlue_pyG import Train_SpatialGlue

    torch.set_num_threads(2)
    fix_seed(seed)
    rna, msi = ad.read_h5ad(rna_path), ad.read_h5ad(msi_path)
    t0 = time.perf_counter()
    n_comps = int(min(30, msi.n_vars - 1, rna.n_vars - 1))
    rna.X = rna.layers["counts"].copy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    sc.pp.scale(rna)
    rna.obsm["feat"] = pca(rna, n_comps=n_comps)
    sc.pp.scale(msi)
    msi.obsm["feat"] = pca(msi, n_comps=n_comps)
    data = construct_neighbor_graph(rna, msi, datatype="SPOTS")
    model = Train_SpatialGlue(data, datatype="SPOTS", device=torch.device("cpu"), random_seed=seed)
    out = model.train()
    emb = np.asarray(out["SpatialGlue"], dtype=np.float32)
    np.save(out_path, emb)
    print(f"wall_s={time.perf_counter() - t0:.3f} "
          f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:4], *(int(a) for a in sys.argv[4:5]))
