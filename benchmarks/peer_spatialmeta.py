"""Run the published SpatialMETA (PyPI ``spatialMETA`` 0.0.3.0) joint model on one paired section;
run it with the Python of a separate virtual environment where SpatialMETA is installed (never
this project's)::

    /tmp/smv/bin/python benchmarks/peer_spatialmeta.py rna.h5ad msi.h5ad out.npy

Inputs as for ``peer_spatialglue.py``: ``rna.h5ad`` with raw counts in ``layers["counts"]``;
``msi.h5ad`` with non-negative intensities in ``X``, both on the same spots. Preprocessing and
training follow SpatialMETA's single-sample tutorial: one joint AnnData (``var["type"]`` SM/ST),
metabolites total-normalised to 1e3, genes left as counts, ``ConditionalVAESTSM`` with a Gaussian
SM and a ZINB ST likelihood, ``fit(max_epoch=64, lr=1e-3, mode="single")``, then
``get_latent_embedding()``. Writes the embedding (``.npy``); prints wall time and peak memory.

Installing: SpatialMETA pins numpy 1.21 / pandas 1.4 / scikit-learn 0.24, which have no wheels
for Python 3.11, so ``pip install spatialmeta`` fails here. The benchmark installs the wheel with
``--no-deps`` over this project's stack (plus einops, intervaltree, molmass, adjusttext, colour,
python-dotplot, svgpathtools, svgwrite, shapely); its plotting module imports torchvision, whose
PyPI wheel does not load with CPU torch, so run with ``SPATIALMETA_NO_TORCHVISION=1`` to give
that plotting-only import an empty stand-in (the model does not use it).
"""

import os
import resource
import sys
import time
import types

import numpy as np


def _torchvision_stand_in() -> None:
    """SpatialMETA's plotting helpers import torchvision.transforms.functional at import time; the
    model never calls them. Register empty modules so the import succeeds."""
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")

    def _unavailable(*_a, **_k):
        raise RuntimeError("torchvision is not available in this benchmark environment")

    fn.resize = fn.to_pil_image = _unavailable
    tv.transforms, tr.functional = tr, fn
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr,
                        "torchvision.transforms.functional": fn})


def main(rna_path: str, msi_path: str, out_path: str, seed: int = 0) -> None:
    if os.environ.get("SPATIALMETA_NO_TORCHVISION"):
        _torchvision_stand_in()
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from spatialmeta.model import ConditionalVAESTSM
    from spatialmeta.util._classes import AnnDataJointSMST

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    np.random.seed(seed)
    rna, msi = ad.read_h5ad(rna_path), ad.read_h5ad(msi_path)
    t0 = time.perf_counter()
    counts = rna.layers["counts"]
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    sm = msi.X.toarray() if sp.issparse(msi.X) else np.asarray(msi.X)
    # SpatialMETA's normalize_total_joint_adata_sm_st(target_sum_SM=1e3, target_sum_ST=None),
    # done here: its own code indexes a sparse matrix with a pandas Series, which current scipy
    # rejects. Metabolites: total per spot scaled to 1e3; genes: raw counts.
    sm = np.clip(sm, 0, None)
    tot = sm.sum(1, keepdims=True)
    sm = np.divide(sm * 1e3, tot, out=np.zeros_like(sm), where=tot > 0)
    X = np.concatenate([sm, counts], axis=1).astype(np.float32)
    var = pd.DataFrame({"type": ["SM"] * sm.shape[1] + ["ST"] * counts.shape[1]},
                       index=[f"mz_{v}" for v in msi.var_names] + list(rna.var_names))
    joint = AnnDataJointSMST(sp.csr_matrix(X), var=var, obs=pd.DataFrame(index=rna.obs_names))
    joint.obsm["spatial"] = np.asarray(rna.obsm["spatial"])
    model = ConditionalVAESTSM(joint, device="cpu", reconstruction_method_sm="g",
                               reconstruction_method_st="zinb")
    model.fit(max_epoch=64, lr=1e-3, mode="single", random_seed=seed)
    emb = np.asarray(model.get_latent_embedding(show_progress=False), dtype=np.float32)
    np.save(out_path, emb)
    print(f"wall_s={time.perf_counter() - t0:.3f} "
          f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:4], *(int(a) for a in sys.argv[4:5]))
