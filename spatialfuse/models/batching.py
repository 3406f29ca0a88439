"""Model data on the device and mini-batches for the three families.

:class:`FitData` holds, for every spot, the projected inputs of each modality (principal
components fitted on the *fitting* spots only), the reconstruction targets (raw counts and library
size, or standardised values), the spatial k-nearest-neighbour table and the base visibility of
each modality (False for spots outside the fitting set, so their features never enter training).

Batchers turn a set of target spots into :class:`Batch` objects whose memory depends only on the
batch size (never on the number of spots):

* :class:`SpotBatcher` (VAE, Transformer): random batches of spots; the Transformer also gathers
  each spot's k nearest spots as tokens;
* :class:`TileBatcher` (GNN): spatial tiles at a random offset each epoch (graph partitions), plus
  an L-hop halo of context nodes so that every target's receptive field is complete.

During training, each target hides one of its modalities with probability ``mask_prob`` (half
RNA, half MSI) and the loss still reconstructs both: this masked cross-modal objective is what
lets every model predict one modality from the other. With ``block_mask_prob`` > 0 (GNN and
Transformer), a whole mini-batch (a tile with its halo, or the spots with their tokens) instead
hides one modality at every node with that probability: at prediction time a held-out block has
its target modality missing at the spot *and at all its neighbours*, which per-spot masking
never shows the model (it learns to copy the neighbours' target values instead).

Transductive fits (``source``, impute's cross-modal fits only): the *source* modality of every
spot — held-out spots included — is visible (inputs, neighbours' context, its own loss term, its
input projection); the other modality stays visible on the fitting spots only. A spot that sees
only the source is trained exactly as it is predicted (no per-spot masking), and its hidden
modality never enters the loss (``Batch.loss_visible``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree

from .data import MODALITIES, ModelInputs


@dataclass
class Batch:
    targets: np.ndarray  # (B,) global spot indices whose outputs/loss this batch computes
    nodes: np.ndarray  # (S,) global indices of all spots whose inputs the batch uses
    pos: torch.Tensor  # (B,) position of each target in ``nodes``
    x: dict[str, torch.Tensor]  # modality -> (S, p) projected inputs
    visible: torch.Tensor  # (S, 2) bool, after masking
    node_batch: torch.Tensor  # (S,) batch (sample) code of each node
    batch: torch.Tensor  # (B,) batch code of each target
    rna: torch.Tensor  # (B, genes) counts (NB) or standardised values
    library: torch.Tensor  # (B,)
    msi: torch.Tensor  # (B, m/z) standardised
    extra: dict = field(default_factory=dict)  # family-specific structure (edges, tokens, ...)
    msi_zero: torch.Tensor | None = None  # (B, m/z) bool: peak missing (zero intensity)
    # (B, 2) bool: which modality of each target may enter the loss (its base visibility);
    # None when every target has both (the usual case: no masking of loss terms at all)
    loss_visible: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.targets)


class FitData:
    """Everything a model needs about the spots, built once per fit."""

    def __init__(self, inputs: ModelInputs, fit_mask: np.ndarray, *, n_pcs: int, k: int,
                 rna_nb: bool, seed: int, device: str, source: str | None = None):
        from sklearn.decomposition import PCA

        self.inputs, self.device = inputs, torch.device(device)
        n = inputs.n_spots
        self.fit_mask = np.asarray(fit_mask, bool)
        if source is not None and source not in MODALITIES:
            raise ValueError(f"source must be one of {MODALITIES} or None, not {source!r}")
        self.source = source  # transductive: this modality is visible at every spot
        fit_idx = np.nonzero(self.fit_mask)[0]
        self.components, self.x = {}, {}
        for m in MODALITIES:
            X = getattr(inputs, m)
            rows = np.arange(n) if m == source else fit_idx
            nc = int(max(1, min(n_pcs, len(rows) - 1, X.shape[1])))
            pca = PCA(nc, svd_solver="randomized" if nc < min(X.shape) // 2 else "full",
                      random_state=seed).fit(X[rows])
            comp = pca.components_.astype(np.float32)
            # one scale per modality (mean PC variance 1 on the spots it is fitted on): PCs keep
            # their relative variance, so the dominant axes of variation stay dominant
            sd = np.full(nc, np.sqrt(pca.explained_variance_.mean()) + 1e-6, np.float32)
            self.components[m] = (comp, pca.mean_.astype(np.float32), sd)
            P = ((X - pca.mean_) @ comp.T) / sd
            self.x[m] = torch.as_tensor(P.astype(np.float32), device=self.device)
        self.rna_nb = rna_nb and inputs.rna_counts is not None
        rna_t = inputs.rna_counts if self.rna_nb else inputs.rna
        self.rna = torch.as_tensor(np.ascontiguousarray(rna_t, dtype=np.float32))
        self.library = torch.as_tensor(
            (inputs.rna_counts.sum(1) if inputs.rna_counts is not None else np.ones(n)).astype(np.float32))
        self.msi = torch.as_tensor(np.ascontiguousarray(inputs.msi, dtype=np.float32))
        zero, self.msi_zero_value = msi_zeros(inputs)
        self.msi_zero = torch.as_tensor(zero)
        self.batch = torch.as_tensor(
            inputs.batch if inputs.batch is not None else np.zeros(n, np.int64), dtype=torch.long)
        vis = np.repeat(self.fit_mask[:, None], len(MODALITIES), 1)
        if source is not None:
            vis[:, MODALITIES.index(source)] = True
        self.base_visible = torch.as_tensor(vis)
        # spatial neighbours (k nearest, excluding self) and the lattice pitch
        kk = int(min(k, max(n - 1, 1)))
        dist, nb = cKDTree(inputs.xy).query(inputs.xy, k=kk + 1)
        self.neighbours, self.nb_dist = nb[:, 1:], dist[:, 1:]
        self.pitch = float(np.median(self.nb_dist[:, 0])) if n > 1 else 1.0
        self.xy = np.asarray(inputs.xy, np.float64)

    @property
    def source_only(self) -> np.ndarray:
        """Spots outside the fitting set whose source modality trains the model (transductive
        fits; none otherwise)."""
        vis = self.base_visible.numpy()
        return ~self.fit_mask & vis.any(1)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(self.x[m].shape[1]) for m in MODALITIES}

    def rna_stats(self) -> dict:
        """What the NB decoder needs to report predictions in standardised units."""
        i = self.inputs
        if not self.rna_nb or i.rna_size_factor is None or i.rna_mean is None:
            return {}  # (concatenated samples: no single standardisation to report in)
        fit = self.fit_mask
        total = float(np.median(i.rna_counts[fit].sum(1) * i.rna_size_factor[fit]))
        log_lib = np.log(np.maximum(i.rna_counts[fit].sum(1), 1.0))
        return {"total": total, "mean": i.rna_mean, "sd": i.rna_sd,
                "log_lib_mean": float(log_lib.mean()), "log_lib_sd": float(log_lib.std() + 1e-6)}

    def neighbour_mean(self, visible: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean projected input of each spot's visible neighbours, per modality (N, p)."""
        nb = torch.as_tensor(self.neighbours, device=self.device)
        out = {}
        for j, m in enumerate(MODALITIES):
            w = visible[:, j].to(self.device)[nb].float()  # (N, k)
            s = (self.x[m][nb] * w[..., None]).sum(1)
            out[m] = s / w.sum(1, keepdim=True).clamp_min(1.0)
        return out

    def make_batch(self, targets: np.ndarray, nodes: np.ndarray, pos: np.ndarray,
                   visible: torch.Tensor, extra: dict | None = None) -> Batch:
        dev = self.device
        t = torch.as_tensor(targets)
        nd = torch.as_tensor(nodes)
        lv = visible[t]
        return Batch(
            targets=targets, nodes=nodes, pos=torch.as_tensor(pos, device=dev),
            x={m: self.x[m][nd.to(dev)] for m in MODALITIES},
            visible=visible[nd].to(dev), node_batch=self.batch[nd].to(dev),
            batch=self.batch[t].to(dev), rna=self.rna[t].to(dev), library=self.library[t].to(dev),
            msi=self.msi[t].to(dev), extra=extra or {}, msi_zero=self.msi_zero[t].to(dev),
            loss_visible=None if bool(lv.all()) else lv.to(dev),
        )


def msi_zeros(inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray]:
    """Which MSI values are missing peaks (zero intensity), and that value in standardised units.

    With standardisation statistics, zero log intensity maps to ``-mean / sd``; without them
    (concatenated samples), a missing peak is a feature's minimum when several spots share it."""
    X = inputs.msi
    if inputs.msi_mean is not None:
        zv = (-np.asarray(inputs.msi_mean) / np.asarray(inputs.msi_sd)).astype(np.float32)
    else:
        zv = X.min(0)
    zero = np.isclose(X, zv[None, :], atol=1e-5)
    zero &= zero.sum(0, keepdims=True) > 1
    return zero, zv.astype(np.float32)


def training_mask(rng: np.random.Generator, n: int, mask_prob: float) -> np.ndarray:
    """(n, 2) bool: which modality each target hides (never both)."""
    r = rng.random(n)
    hide = np.zeros((n, 2), bool)
    hide[:, 0] = r < mask_prob / 2
    hide[:, 1] = (r >= mask_prob / 2) & (r < mask_prob)
    return hide


def both_visible(visible: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """(B,) bool: targets whose two modalities are both visible (only those get per-spot
    masking; a transductive fit's source-only spot is trained as it is predicted)."""
    return visible[torch.as_tensor(targets)].all(1).cpu().numpy()


def _block_hide(rng: np.random.Generator, prob: float) -> int | None:
    """With probability ``prob``, the modality (0 RNA, 1 MSI, equally likely) that a whole
    mini-batch hides; else None. Draws nothing from ``rng`` when ``prob`` is 0, so runs without
    block masking are unchanged."""
    if prob <= 0:
        return None
    u = rng.random()
    if u >= prob:
        return None
    return 0 if u < prob / 2 else 1  # 0 RNA, 1 MSI


class SpotBatcher:
    """Random batches of spots. With ``n_tokens`` > 0, each target also brings its nearest
    spots as context (the Transformer's tokens); otherwise only the targets themselves."""

    def __init__(self, data: FitData, batch_size: int, mask_prob: float, n_tokens: int = 0,
                 context: bool = False, block_mask_prob: float = 0.0):
        self.data, self.batch_size, self.mask_prob = data, int(batch_size), float(mask_prob)
        self.block_mask_prob = float(block_mask_prob)
        self.n_tokens = int(min(n_tokens, data.neighbours.shape[1] + 1)) if n_tokens else 0
        self.context = context  # add each spot's neighbour means (the VAE's spatial context)

    def batches(self, idx: np.ndarray, rng: np.random.Generator | None, visible: torch.Tensor,
                train: bool):
        d = self.data
        order = rng.permutation(idx) if (train and rng is not None) else np.asarray(idx)
        # neighbour means over the spots visible in this pass (fit spots, or at prediction time
        # also the source modality of the spots being predicted)
        ctx = d.neighbour_mean(visible) if self.context else None
        for s in range(0, len(order), self.batch_size):
            tg = order[s:s + self.batch_size]
            if self.n_tokens:
                tok = np.concatenate([tg[:, None], d.neighbours[tg, :self.n_tokens - 1]], 1)
                nodes, inv = np.unique(tok, return_inverse=True)
                inv = inv.reshape(tok.shape)
                rel = (d.xy[tok] - d.xy[tg][:, None, :]) / d.pitch
                extra = {"tokens": torch.as_tensor(inv, device=d.device),
                         "rel": torch.as_tensor(rel.astype(np.float32), device=d.device)}
                pos = inv[:, 0]
            else:
                nodes, pos, extra = tg, np.arange(len(tg)), {}
            b = d.make_batch(tg, nodes, pos, visible, extra)
            b.extra["base_visible"] = b.visible  # before any masking (cross-modal term)
            hide = training_mask(rng, len(tg), self.mask_prob) if (train and rng is not None) \
                else np.zeros((len(tg), 2), bool)
            hide &= both_visible(visible, tg)[:, None]  # a source-only spot: as predicted
            block = _block_hide(rng, self.block_mask_prob) if (train and rng is not None) else None
            if block is not None:  # one modality hidden at every node of the batch
                hide[:] = False
                hide[:, block] = True
                if self.n_tokens:
                    b.visible = b.visible.clone()
                    b.visible[:, block] = False
            # the targets' own inputs, as seen by the model (for tokens: the centre token)
            b.extra["centre_visible"] = visible[torch.as_tensor(tg)].to(d.device) & \
                ~torch.as_tensor(hide, device=d.device)
            if not self.n_tokens:
                b.visible = b.extra["centre_visible"]
            if ctx is not None:
                t = torch.as_tensor(tg, device=d.device)
                b.extra["context"] = {m: c[t] for m, c in ctx.items()}
            yield b


class TileBatcher:
    """Graph partitions: spatial tiles of about ``batch_size`` spots (random offset each epoch),
    each with its ``n_layers``-hop halo of context nodes and the kNN edges among them."""

    def __init__(self, data: FitData, batch_size: int, mask_prob: float, n_layers: int, k: int,
                 block_mask_prob: float = 0.0, context: bool = False):
        self.data, self.batch_size, self.mask_prob = data, int(batch_size), float(mask_prob)
        self.context = context  # add the targets' neighbour means (the linear translation path)
        self.block_mask_prob = float(block_mask_prob)
        self.n_layers, self.k = int(n_layers), int(min(k, data.neighbours.shape[1]))
        area = data.pitch ** 2 * np.sqrt(3) / 2  # hexagonal lattice cell
        self.tile_um = float(np.sqrt(self.batch_size * area))
        self._local = np.full(len(data.xy), -1, np.int64)

    def _groups(self, idx: np.ndarray, rng: np.random.Generator | None, train: bool):
        xy = self.data.xy[idx]
        off = rng.uniform(0, self.tile_um, 2) if (train and rng is not None) else np.zeros(2)
        cell = np.floor((xy - xy.min(0) + off) / self.tile_um).astype(np.int64)
        key = cell[:, 0] * 1_000_003 + cell[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        tiles = [idx[inv == t] for t in range(len(uniq))] if len(uniq) < 64 else \
            np.split(idx[np.argsort(inv, kind="stable")], np.cumsum(np.bincount(inv))[:-1])
        order = rng.permutation(len(tiles)) if (train and rng is not None) else range(len(tiles))
        cur: list[np.ndarray] = []
        n = 0
        for t in order:
            cur.append(tiles[t])
            n += len(tiles[t])
            if n >= self.batch_size:
                yield np.concatenate(cur)
                cur, n = [], 0
        if cur:
            yield np.concatenate(cur)

    def batches(self, idx: np.ndarray, rng: np.random.Generator | None, visible: torch.Tensor,
                train: bool):
        d = self.data
        nb = d.neighbours[:, :self.k]
        ctx = d.neighbour_mean(visible) if self.context else None
        for tg in self._groups(np.asarray(idx), rng, train):
            nodes = tg
            for _ in range(self.n_layers):
                nodes = np.union1d(nodes, nb[nodes].ravel())
            loc = self._local
            loc[nodes] = np.arange(len(nodes))
            src_g = nb[nodes].ravel()
            dst_l = np.repeat(np.arange(len(nodes)), self.k)
            src_l = loc[src_g]
            keep = src_l >= 0
            dist = d.nb_dist[nodes, :self.k].ravel()[keep] / d.pitch
            src = np.r_[src_l[keep], np.arange(len(nodes))]  # + self loops
            dst = np.r_[dst_l[keep], np.arange(len(nodes))]
            dist = np.r_[dist, np.zeros(len(nodes))]
            pos = loc[tg].copy()
            loc[nodes] = -1
            extra = {"src": torch.as_tensor(src, device=d.device),
                     "dst": torch.as_tensor(dst, device=d.device),
                     "dist": torch.as_tensor(dist.astype(np.float32), device=d.device)}
            b = d.make_batch(tg, nodes, pos, visible, extra)
            b.extra["base_visible"] = b.visible  # before any masking (cross-modal term)
            if ctx is not None:
                t = torch.as_tensor(tg, device=d.device)
                b.extra["context"] = {m: c[t] for m, c in ctx.items()}
            if train and rng is not None:
                hide = training_mask(rng, len(tg), self.mask_prob)
                hide &= both_visible(visible, tg)[:, None]  # a source-only spot: as predicted
                hide = torch.as_tensor(hide, device=d.device)
                v = b.visible.clone()
                block = _block_hide(rng, self.block_mask_prob)
                if block is not None:  # the tile and its halo hide one modality everywhere
                    v[:, block] = False
                else:
                    v[b.pos] = v[b.pos] & ~hide
                b.visible = v
            yield b
