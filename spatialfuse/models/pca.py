"""Baseline joint embedding: per-modality PCA, blocks weighted equally, concatenated."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .data import ModelInputs


def fit_pca(inputs: ModelInputs, params: dict, seed: int = 0, device: str = "cpu") -> dict:
    """Concatenated PCA: ``n_comps`` PCs of each modality, each block scaled to unit total
    variance so neither modality dominates. Deterministic (full SVD)."""
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    n_comps = int(params.get("n_comps", 20))
    blocks, ckpt, evr = [], {}, {}
    for name, X in (("rna", inputs.rna), ("msi", inputs.msi)):
        nc = int(min(n_comps, X.shape[0] - 1, X.shape[1]))
        pca = PCA(n_components=nc, svd_solver="full", random_state=seed)
        Z = pca.fit_transform(X)
        Z = Z / np.sqrt((Z**2).sum(1).mean() + 1e-12)
        blocks.append(Z)
        ckpt[f"{name}_components"] = pca.components_.astype(np.float32)
        ckpt[f"{name}_mean"] = pca.mean_.astype(np.float32)
        evr[name] = float(pca.explained_variance_ratio_.sum())
    emb = np.concatenate(blocks, 1).astype(np.float32)
    secs = time.perf_counter() - t0
    log = pd.DataFrame([{"epoch": 0, "loss": float("nan"), "seconds": secs}])
    return {
        "embedding": emb,
        "checkpoint": {"model": "pca", "params": params, **ckpt},
        "train_log": log,
        "metrics": {"explained_variance_rna": evr["rna"], "explained_variance_msi": evr["msi"],
                    "seconds": secs, "embedding_dim": int(emb.shape[1])},
    }
