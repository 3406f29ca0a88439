"""Spatial graph-attention network over the spots' k-nearest-neighbour graph.

Every spot carries two tokens (RNA, MSI). Each layer lets every token attend, along the sparse
spatial edges (self loops included), to the RNA *and* MSI tokens of its neighbours: within-modality
and cross-modality attention in one softmax, with a learned bias per edge type (RNA→RNA, MSI→RNA,
RNA→MSI, MSI→MSI) and per distance. Masked tokens (held-out or hidden for training) are not
attended to. Attention is computed on an edge list with ``index_add_``/``scatter_reduce``
(:class:`.modules.EdgeAttention`) — plain torch; a graph library would add a heavy dependency for
one operation. Training runs on spatial tiles with their L-hop halo (:class:`.batching.TileBatcher`),
so memory grows with the tile size, not with the number of spots.
"""

from __future__ import annotations

import torch
from torch import nn

from .modules import AttentionModule, EdgeAttention, mlp


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = EdgeAttention(d, heads, dropout)
        self.ff = mlp(d, 2 * d, d, 1, dropout)
        self.bias = nn.Linear(5, heads)  # edge type one-hot (4) + distance in pitches

    def forward(self, x, src, dst, efeat, ok):
        x = x + self.att(self.n1(x), src, dst, self.bias(efeat), ok)
        return x + self.ff(self.n2(x))


class SpatialGNN(AttentionModule):
    def __init__(self, dims: dict[str, int], n_genes: int, n_mz: int, p: dict, **kw):
        super().__init__(dims, n_genes, n_mz, p, layer=_Block, n_read=2, **kw)

    def encode(self, batch):
        tok = self.encoders(batch.x, batch.visible, batch.node_batch)  # (S, 2, d)
        S = tok.shape[0]
        x = tok.reshape(2 * S, -1)
        ok = batch.visible.reshape(-1)
        src_n, dst_n, dist = batch.extra["src"], batch.extra["dst"], batch.extra["dist"]
        srcs, dsts, feats = [], [], []
        eye = torch.eye(4, device=x.device)
        for a in range(2):
            for b in range(2):
                srcs.append(2 * src_n + a)
                dsts.append(2 * dst_n + b)
                feats.append(torch.cat([eye[2 * a + b].expand(len(dist), 4), dist[:, None]], 1))
        src, dst, efeat = torch.cat(srcs), torch.cat(dsts), torch.cat(feats)
        for blk in self.layers:
            x = blk(x, src, dst, efeat, ok)
        h = x.reshape(S, -1)[batch.pos]
        return self.head(self.norm(h))
