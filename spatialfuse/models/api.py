"""Fit a joint model on (a subset of) spots; embed; predict one modality from the other.

The entry point for the model stage and for cross-modal imputation::

    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.api import fit

    inputs = prepare_inputs(rna, msi)                  # standardised, see ModelInputs
    fm = fit("gnn", inputs, params={}, seed=0, device="auto", train_mask=train)
    Z = fm.embed()                                     # (n_spots, latent_dim), every spot
    msi_hat = fm.predict_msi_from_rna(spots=test)      # (len(test), n_mz), standardised
    rna_hat = fm.predict_rna_from_msi(spots=test)      # (len(test), n_genes), standardised
    msi_log = inputs.to_lognormal("msi", msi_hat)      # back to log1p(normalised intensity)

``name``: ``"vae"``, ``"gnn"`` or ``"transformer"``. ``params``: the model's config section
(missing keys take :data:`DEFAULTS`). ``train_mask`` (bool per spot, default all): the spots
whose features the model may see while fitting. Spots outside it are *held out*: neither of their
modalities enters training — not as inputs, not as neighbours' context, not in the loss, not in
the input projections (PCA) — they only sit in the spatial graph as empty nodes.

``transductive`` (``"rna"`` or ``"msi"``; default None; impute's cross-modal fits): that modality,
the *source* of one prediction direction, is measured at every spot and visible at prediction
time anyway, so it enters training at the held-out spots too — as inputs, as neighbours'
context, in its own reconstruction term and in its input projection — while their other modality
(the target) stays out of inputs, context and loss. The model then learns on the held-out
block's source distribution, in the configuration it predicts in (source visible, target
hidden). Such a fit serves that direction only.

Prediction for the spots in ``spots`` (indices or a bool mask; default: the held-out spots, or
all spots when nothing is held out) uses the *source* modality of every spot and the *target*
modality of fitting spots only, with the target modality of every spot in ``spots`` hidden — so a
held-out spot's target is never seen, and a fitting spot asked for is predicted without its own
target values. The GNN and Transformer may use neighbouring fitting spots' target values (spatial
context); the VAE predicts from the spot's own source modality (and its neighbours' source
modality when ``spatial_k`` > 0). Predictions are in the standardised units of
:class:`ModelInputs` (per-feature mean 0, SD 1); ``inputs.to_lognormal(modality, values)`` maps
them to log-normalised units. Note that :func:`prepare_inputs` standardises with statistics of all
spots unless given ``stats_mask=train`` (per-feature constants; pass it for strict evaluation).

Same seed + inputs + params on CPU → identical embeddings and predictions.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .batching import FitData, SpotBatcher, TileBatcher
from .data import MODALITIES, ModelInputs
from ..fitsize import DEFAULT_BATCH, fit_batch_size
from .gnn import SpatialGNN
from .trainer import split_validation, train_module
from .transformer import NeighbourhoodTransformer
from .vae import JointVAE

log = logging.getLogger(__name__)

_COMMON = dict(latent_dim=16, hidden_dim=64, input_pcs=32, n_top_genes=None, rna_likelihood="nb",
               msi_likelihood="gaussian", rna_weight=1.0, msi_weight=0.5, kl_weight=1.0,
               mask_prob=0.5, dropout=0.1, max_epochs=150, max_steps=500, patience=15,
               batch_size=DEFAULT_BATCH, lr=2e-3, weight_decay=1e-4, val_fraction=0.1)
#: Default parameters of each model family (the config schema carries the same values).
#: ``kl_weight`` (per 100 features) > 0 makes the latent Gaussian with a KL term to N(0, I) (for
#: the GNN and the Transformer as for the VAE): a compact latent whose dominant axes are the
#: domains. ``max_steps`` caps optimiser steps, so large sections train for fewer epochs.
#: ``msi_weight`` 0.5: a spot's metabolite profile is averaged from a coarser MSI raster placed by
#: registration (tens of µm off), so at a domain boundary it mixes the neighbouring domain, while
#: its genes are measured on the spot itself; at equal weight the latent followed the blurred MSI
#: and mis-called boundary spots (README, Joint models: diagnosis and the 16-fit benchmark).
DEFAULTS: dict[str, dict] = {
    "vae": {**_COMMON, "n_layers": 2, "spatial_k": 6},
    "gnn": {**_COMMON, "n_layers": 2, "n_heads": 4, "k": 6},
    "transformer": {**_COMMON, "n_layers": 2, "n_heads": 4, "k": 7},
}
MODULES = {"vae": JointVAE, "gnn": SpatialGNN, "transformer": NeighbourhoodTransformer}
#: CPU threads for fitting, training and prediction, fixed: torch's and BLAS's CPU results
#: (the input PCA, matrix products) differ in the last bits with the number of threads, so a job
#: granted fewer cores must still compute the same numbers.
CPU_THREADS = 1


@contextmanager
def fixed_threads(n: int = CPU_THREADS):
    """Run torch and the BLAS/OpenMP pools (numpy, scipy, scikit-learn) on ``n`` CPU threads,
    restored afterwards."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def _rna_likelihood(p: dict, data: FitData) -> str:
    """The RNA likelihood actually used (count models need raw counts)."""
    return p["rna_likelihood"] if data.rna_nb else "gaussian"


def _as_index(spots, n: int) -> np.ndarray:
    a = np.asarray(spots)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"boolean spot mask must have length {n}")
        return np.nonzero(a)[0]
    return a.astype(np.int64).ravel()


@dataclass
class FittedModel:
    """A trained model plus what it needs to embed and predict (see the module docstring)."""

    name: str
    params: dict
    module: torch.nn.Module
    data: FitData
    batcher: object
    train_log: pd.DataFrame
    metrics: dict = field(default_factory=dict)

    @property
    def inputs(self) -> ModelInputs:
        return self.data.inputs

    @property
    def train_mask(self) -> np.ndarray:
        return self.data.fit_mask

    def _run(self, spots: np.ndarray, visible: torch.Tensor, what: str) -> list[np.ndarray]:
        """The module's ``embed`` ([latent]), ``predict`` ([RNA, MSI]) or ``predict_msi``
        ([MSI]) of ``spots``, with the modalities of ``visible`` shown to the encoder."""
        self.module.eval()
        outs: list[list[np.ndarray]] = []
        order = []
        with torch.no_grad(), fixed_threads():
            for b in self.batcher.batches(spots, None, visible, train=False):
                if what == "embed":
                    res = (self.module.embed(b),)
                elif what == "predict_msi":  # the MSI alone: no expected log1p of the genes
                    res = self.module.predict(b, rna=False)[1:]
                else:
                    res = self.module.predict(b)
                outs.append([r.detach().cpu().numpy() for r in res])
                order.append(b.targets)
        # batches may reorder targets (tiles): return rows in the order of ``spots``
        idx = np.concatenate(order)
        sorter = np.argsort(idx, kind="stable")
        pos = sorter[np.searchsorted(idx, spots, sorter=sorter)]
        return [np.concatenate([o[j] for o in outs])[pos] for j in range(len(outs[0]))]

    def embed(self, spots=None) -> np.ndarray:
        """Latent embedding (posterior mean for the VAE) of ``spots`` (default all), using both
        modalities of every spot, held-out spots included."""
        n = self.inputs.n_spots
        idx = np.arange(n) if spots is None else _as_index(spots, n)
        vis = torch.ones((n, len(MODALITIES)), dtype=torch.bool)
        return self._run(idx, vis, "embed")[0].astype(np.float32)

    def embed_from(self, source: str, spots=None) -> np.ndarray:
        """Latent of ``spots`` (default all) inferred from modality ``source`` (``"rna"`` or
        ``"msi"``) alone: the other modality is hidden at every spot, training spots included,
        so every spot gets its latent the same way and no value of the other modality enters."""
        if source not in MODALITIES:
            raise ValueError(f"source must be one of {MODALITIES}, not {source!r}")
        n = self.inputs.n_spots
        idx = np.arange(n) if spots is None else _as_index(spots, n)
        vis = torch.ones((n, len(MODALITIES)), dtype=torch.bool)
        vis[:, 1 - MODALITIES.index(source)] = False
        return self._run(idx, vis, "embed")[0].astype(np.float32)

    def _predict(self, spots, target: str) -> np.ndarray:
        n = self.inputs.n_spots
        if spots is None:
            spots = ~self.train_mask if (~self.train_mask).any() else np.ones(n, bool)
        idx = _as_index(spots, n)
        j = MODALITIES.index(target)
        vis = torch.ones((n, len(MODALITIES)), dtype=torch.bool)
        vis[:, j] = torch.as_tensor(self.train_mask)  # target modality: fitting spots only
        vis[torch.as_tensor(idx), j] = False  # ... and never of the spots being predicted
        if target == "msi":
            return self._run(idx, vis, "predict_msi")[0].astype(np.float32)
        return self._run(idx, vis, "predict")[0].astype(np.float32)

    def predict_msi_from_rna(self, spots=None) -> np.ndarray:
        """MSI of ``spots`` predicted without their MSI (standardised units)."""
        return self._predict(spots, "msi")

    def predict_rna_from_msi(self, spots=None) -> np.ndarray:
        """RNA of ``spots`` predicted without their RNA (standardised log-normalised units)."""
        return self._predict(spots, "rna")

    def checkpoint(self) -> dict:
        """Everything needed to rebuild the model: weights, parameters, input projections."""
        d = self.data
        return {
            "model": self.name, "params": self.params,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "projections": {m: {"components": c, "mean": mu, "sd": sd}
                            for m, (c, mu, sd) in d.components.items()},
            "rna_features": self.inputs.rna_features, "msi_features": self.inputs.msi_features,
            "rna_likelihood": _rna_likelihood(self.params, d),
            "msi_likelihood": self.params["msi_likelihood"],
            "train_mask": d.fit_mask.copy(), "metrics": self.metrics,
        }


def fit(name: str, inputs: ModelInputs, params: dict | None = None, seed: int = 0,
        device: str = "auto", train_mask=None, transductive: str | None = None) -> FittedModel:
    """Train model ``name`` on the spots of ``train_mask`` (default all), and with
    ``transductive`` on that modality of every other spot too; see the module doc."""
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODULES)}")
    p = {**DEFAULTS[name], **(params or {})}
    dev = resolve_device(device)
    n = inputs.n_spots
    fit_mask = np.ones(n, bool) if train_mask is None else np.zeros(n, bool)
    if train_mask is not None:
        fit_mask[_as_index(train_mask, n)] = True
    if transductive is not None and transductive not in MODALITIES:
        raise ValueError(f"{name}: transductive must be one of {MODALITIES} or None, "
                         f"not {transductive!r}")
    if fit_mask.sum() < 10:
        raise ValueError(f"{name}: at least 10 fitting spots are needed, got {int(fit_mask.sum())}")
    for key, allowed in (("rna_likelihood", ("nb", "zinb", "gaussian")),
                         ("msi_likelihood", ("gaussian", "zig"))):
        if p[key] not in allowed:
            raise ValueError(f"{name}: {key} must be one of {allowed}, got {p[key]!r}")
    rna_nb = p["rna_likelihood"] in ("nb", "zinb")
    if rna_nb and inputs.rna_counts is None:
        log.warning("%s: no raw counts in the RNA input; using a Gaussian likelihood on "
                    "log-normalised values instead of the negative binomial", name)
    with torch.random.fork_rng(devices=[]), fixed_threads():
        torch.manual_seed(seed)
        k = int(p.get("spatial_k") or 0) if name == "vae" else int(p["k"])
        data = FitData(inputs, fit_mask, n_pcs=int(p["input_pcs"]), k=max(k, 1), rna_nb=rna_nb,
                       seed=seed, device=dev, source=transductive)
        extra = np.nonzero(data.source_only)[0]  # source-only training spots (transductive)
        module = MODULES[name](data.dims, inputs.rna.shape[1], inputs.msi.shape[1], p,
                               rna_nb=data.rna_nb, n_batches=inputs.n_batches,
                               rna_stats=data.rna_stats(),
                               msi_zero_value=data.msi_zero_value).to(dev)
        # small sections: a smaller batch, so an epoch still takes several steps (fitsize)
        n_tr = int(fit_mask.sum() * (1 - float(p["val_fraction"]))) + len(extra)
        bs = fit_batch_size(n_tr, int(p["batch_size"]))
        mp = float(p["mask_prob"])
        bmp = float(p.get("block_mask_prob") or 0.0)  # set by impute's per-fold fits
        lin = bool(p.get("linear_path"))  # set by impute's per-fold fits: neighbour means
        if name == "gnn":
            batcher = TileBatcher(data, bs, mp, n_layers=int(p["n_layers"]), k=int(p["k"]),
                                  block_mask_prob=bmp, context=lin)
        elif name == "transformer":
            batcher = SpotBatcher(data, bs, mp, n_tokens=int(p["k"]), block_mask_prob=bmp,
                                  context=lin)
        else:
            batcher = SpotBatcher(data, bs, mp, context=k > 0 or lin)
        tr, va = split_validation(np.nonzero(fit_mask)[0], float(p["val_fraction"]), seed)
        if len(extra):  # trained on their source only; validation stays on fitting spots
            tr = np.union1d(tr, extra)
        held = (f"{n - fit_mask.sum()} held out ({len(extra)} of them training on their "
                f"{transductive} only)" if transductive else f"{n - fit_mask.sum()} held out")
        log.info("%s: %d fitting spots (%d train, %d validation), %s, %d genes, %d m/z, "
                 "device %s", name, fit_mask.sum(), len(tr) - len(extra), len(va), held,
                 inputs.rna.shape[1], inputs.msi.shape[1], dev)
        train_log, summary = train_module(
            module, batcher, data.base_visible, tr, va, max_epochs=int(p["max_epochs"]),
            lr=float(p["lr"]), weight_decay=float(p["weight_decay"]), patience=int(p["patience"]),
            seed=seed, name=name, max_steps=int(p["max_steps"] or 0),
            min_epochs=int(p.get("min_epochs") or 0),
            min_epochs_max_steps=int(p.get("min_epochs_max_steps") or 0) or None)
    metrics = {**summary, "rna_likelihood": _rna_likelihood(p, data),
               "msi_likelihood": p["msi_likelihood"],
               "n_parameters": int(sum(q.numel() for q in module.parameters())),
               "embedding_dim": int(p["latent_dim"]), "n_fit_spots": int(fit_mask.sum())}
    if transductive is not None:
        metrics.update(transductive=transductive, n_source_only_spots=int(len(extra)))
    return FittedModel(name, p, module, data, batcher, train_log, metrics)
