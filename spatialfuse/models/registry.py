"""Name → model function; the one entry point the model rule calls."""

from __future__ import annotations

import logging

import anndata as ad

from .data import prepare_inputs
from .pca import fit_pca

log = logging.getLogger(__name__)

MODEL_REGISTRY = {
    "pca": fit_pca,
}


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def run_model(name: str, rna: ad.AnnData, msi: ad.AnnData, params: dict, seed: int = 0,
              device: str = "auto") -> dict:
    """Fit model ``name`` on paired spots; returns embedding, checkpoint, train_log, metrics."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODEL_REGISTRY)}")
    inputs = prepare_inputs(rna, msi, params.get("n_top_genes"))
    dev = resolve_device(device)
    log.info("model %s: %d spots, %d genes, %d m/z, device %s", name, len(inputs.obs_names),
             inputs.rna.shape[1], inputs.msi.shape[1], dev)
    out = MODEL_REGISTRY[name](inputs, params, seed=seed, device=dev)
    out["metrics"].update(model=name, device=dev, n_spots=len(inputs.obs_names))
    out["inputs"] = inputs
    return out
