"""The one training loop shared by the VAE, the GNN and the Transformer.

``train_module`` knows nothing about a model's internals: it asks a batcher for mini-batches of
target spots and the module for ``loss(batch)`` (a dict of terms with the total under ``"loss"``).
It provides what every family needs: seeded shuffling and masking (fully deterministic on CPU),
AdamW with gradient clipping, early stopping on a held-out split of spots (the best weights are
restored), a training log (epoch, each loss term, validation loss, seconds) and periodic progress
lines (:class:`spatialfuse.logging_utils.Progress`).
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import pandas as pd
import torch

from ..logging_utils import Progress

log = logging.getLogger(__name__)


def split_validation(idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (seeded) split of spot indices into training and validation spots."""
    idx = np.asarray(idx)
    n_val = int(round(fraction * len(idx)))
    if n_val == 0 or len(idx) - n_val < 2:
        return idx, idx[:0]
    perm = np.random.default_rng([seed, 1]).permutation(len(idx))
    return np.sort(idx[perm[n_val:]]), np.sort(idx[perm[:n_val]])


def _epoch(module, batches, optimiser=None, clip: float = 5.0) -> tuple[dict[str, float], int]:
    """Mean loss terms over one pass (weighted by batch size), and the number of batches."""
    sums: dict[str, float] = {}
    n = steps = 0
    for b in batches:
        steps += 1
        terms = module.loss(b)
        if optimiser is not None:
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            optimiser.step()
        w = len(b)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * w
        n += w
    return {k: v / max(n, 1) for k, v in sums.items()}, steps


def train_module(module: torch.nn.Module, batcher, visible: torch.Tensor, train_idx: np.ndarray,
                 val_idx: np.ndarray, *, max_epochs: int, lr: float, weight_decay: float,
                 patience: int, seed: int, name: str = "model", progress_every_s: float = 5.0,
                 max_steps: int | None = None, min_epochs: int = 0,
                 min_epochs_max_steps: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Train ``module`` in place; returns (train_log, summary). See the module docstring.

    Training stops after ``max_epochs``, after ``patience`` epochs without a better validation
    loss, or once ``max_steps`` optimiser steps are done (large sections need fewer epochs) and
    at least ``min_epochs`` epochs have run (a step cap set for small sections does not stop a
    large one after a few epochs) or ``min_epochs_max_steps`` steps are done (the most that
    floor may take; None: no limit)."""
    # foreach: one kernel per step for all parameters (CPU defaults to a loop over them); the
    # same arithmetic, bit for bit (checked on the three families), ~10 % off a GNN fit
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    prog = Progress(f"train {name} epoch", total=max_epochs, every=progress_every_s, logger=log)
    rows, best, best_state, best_epoch, bad, steps = [], np.inf, None, -1, 0, 0
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        te = time.perf_counter()
        module.train()
        rng = np.random.default_rng([seed, epoch])
        tr, n_steps = _epoch(module, batcher.batches(train_idx, rng, visible, train=True), opt)
        steps += n_steps
        row = {"epoch": epoch, **tr}
        if len(val_idx):
            module.eval()
            with torch.no_grad():  # the same masks every epoch, so losses are comparable
                va, _ = _epoch(module, batcher.batches(val_idx, np.random.default_rng([seed, 0]),
                                                    visible, train=True))
            row["val_loss"] = va["loss"]
        else:
            row["val_loss"] = tr["loss"]
        row["epoch_seconds"] = time.perf_counter() - te
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if not np.isfinite(row["loss"]):
            raise FloatingPointError(f"{name}: training loss is not finite at epoch {epoch}; "
                                     "try a smaller learning rate")
        improved = not np.isfinite(best) or row["val_loss"] < best - 1e-4 * abs(best)
        if improved:
            best, best_epoch, bad = row["val_loss"], epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
        prog.update(epoch, force=epoch == 1, loss=row["loss"], val_loss=row["val_loss"])
        if bad >= patience:
            log.info("%s: early stop at epoch %d (best %d, val_loss %.4g)", name, epoch,
                     best_epoch, best)
            break
        floor_done = epoch >= min_epochs or (min_epochs_max_steps and steps >= min_epochs_max_steps)
        if max_steps and steps >= max_steps and floor_done:
            log.info("%s: %d optimiser steps done at epoch %d (best %d, val_loss %.4g)", name,
                     steps, epoch, best_epoch, best)
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    secs = time.perf_counter() - t0
    prog.update(len(rows), force=True, loss=rows[-1]["loss"], best_val_loss=float(best))
    summary = {"epochs_run": len(rows), "best_epoch": best_epoch, "best_val_loss": float(best),
               "train_seconds": secs, "epoch_seconds": secs / max(len(rows), 1), "steps": steps}
    return pd.DataFrame(rows), summary
