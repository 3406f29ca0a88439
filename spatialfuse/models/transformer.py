"""Neighbourhood Transformer: each spot is read together with its k nearest spots.

A spot's sequence holds a summary ([CLS]) token plus two tokens (RNA, MSI) for itself and each of
its k − 1 nearest neighbours; every token gets its modality's encoding and a Fourier encoding of
its offset from the centre spot (in lattice pitches), so attention runs across modalities and
across the local window at once. Masked tokens (held-out or hidden for training) are excluded as
keys. The latent is read from the [CLS] and the centre spot's two tokens. Mini-batches are random
spots with their windows (:class:`.batching.SpotBatcher`): memory O(batch × k).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .modules import AttentionModule, mlp


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = mlp(d, 2 * d, d, 1, dropout)
        self.p = dropout

    def forward(self, x, keep):  # x (B, T, d); keep (B, T) bool: usable as keys
        B, T, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],
                                           dropout_p=self.p if self.training else 0.0)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, d))
        return x + self.ff(self.n2(x))


class NeighbourhoodTransformer(AttentionModule):
    def __init__(self, dims: dict[str, int], n_genes: int, n_mz: int, p: dict, **kw):
        super().__init__(dims, n_genes, n_mz, p, layer=_Layer, n_read=3, **kw)
        d = self.d_model
        self.n_freq = 4
        self.pos = nn.Linear(4 * self.n_freq, d)
        self.cls = nn.Parameter(torch.zeros(d))

    def _fourier(self, rel):  # rel (B, K, 2) in pitches
        f = (2.0 ** torch.arange(self.n_freq, device=rel.device)) * (math.pi / 4)
        a = rel[..., None] * f  # (B, K, 2, F)
        return torch.cat([torch.sin(a), torch.cos(a)], -1).flatten(-2)

    def encode(self, batch):
        tok_idx = batch.extra["tokens"]  # (B, K) local node indices, centre first
        B, K = tok_idx.shape
        vis = batch.visible[tok_idx]  # (B, K, 2)
        vis[:, 0] = batch.extra["centre_visible"]
        node_tok = self.encoders(batch.x, batch.visible, batch.node_batch)  # (S, 2, d)
        # the centre's masked modality must show the 'missing' token, not its features
        t = node_tok[tok_idx]  # (B, K, 2, d)
        cen = self.encoders({m: v[batch.pos] for m, v in batch.x.items()},
                            batch.extra["centre_visible"], batch.batch)
        t = torch.cat([cen[:, None], t[:, 1:]], 1)
        t = t + self.pos(self._fourier(batch.extra["rel"]))[:, :, None, :]
        x = torch.cat([self.cls.expand(B, 1, -1), t.reshape(B, 2 * K, -1)], 1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), vis.reshape(B, -1)], 1)
        for layer in self.layers:
            x = layer(x, keep)
        h = torch.cat([x[:, 0], x[:, 1], x[:, 2]], 1)
        return self.head(self.norm(h))
