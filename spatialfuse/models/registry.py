"""Name → model; the one entry point the model rule calls."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .api import MODULES, fit, fixed_threads, resolve_device
from .data import prepare_inputs
from .pca import fit_pca

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

MODEL_REGISTRY = ("pca", *MODULES)


def _contract_metrics(m: dict) -> dict:
    """The model's metrics with one timing figure, ``seconds`` (what metrics.json carries)."""
    out = {k: v for k, v in m.items() if k not in ("train_seconds", "epoch_seconds")}
    out["seconds"] = m["train_seconds"]
    return out


def run_model(name: str, rna: ad.AnnData, msi: ad.AnnData, params: dict, seed: int = 0,
              device: str = "auto") -> dict:
    """Fit model ``name`` on paired spots; returns embedding, checkpoint, train_log, metrics
    (and the ``inputs`` it was trained on; for the neural models also the ``fitted`` model)."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODEL_REGISTRY)}")
    # one CPU thread throughout: identical numbers whatever cores the job was granted
    with fixed_threads():
        inputs = prepare_inputs(rna, msi, params.get("n_top_genes"))
        dev = resolve_device(device)
        log.info("model %s: %d spots, %d genes, %d m/z, device %s", name, len(inputs.obs_names),
                 inputs.rna.shape[1], inputs.msi.shape[1], dev)
        if name == "pca":
            out = fit_pca(inputs, params, seed=seed, device=dev)
        else:
            fm = fit(name, inputs, params, seed=seed, device=dev)
            out = {"embedding": fm.embed(), "checkpoint": fm.checkpoint(),
                   "train_log": fm.train_log, "metrics": _contract_metrics(fm.metrics),
                   "fitted": fm}
    out["metrics"].update(model=name, device=dev, n_spots=len(inputs.obs_names))
    out["inputs"] = inputs
    return out
