"""Multimodal VAE: one Gaussian expert per modality, joined by a product of experts.

Each modality's encoder sees that modality only (its projected inputs, and optionally the mean of
its k spatial neighbours — a BANKSY-style spatial context); the joint posterior is the product of
the available experts and the N(0, I) prior expert, so a spot with one modality masked or missing
is encoded from the other — which is how the VAE predicts one modality from the other. Decoders:
negative binomial on gene counts, Gaussian on standardised log intensities (see
:class:`.modules.ModalityDecoders`). With several batches (samples), a one-hot batch covariate
enters every encoder and decoder (scVI-style integration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import MODALITIES
from .modules import JointModule, mlp


class JointVAE(JointModule):
    variational = True

    def __init__(self, dims: dict[str, int], n_genes: int, n_mz: int, p: dict, *, rna_nb: bool,
                 n_batches: int = 1, rna_stats: dict | None = None, msi_zero_value=None):
        super().__init__(dims, n_genes, n_mz, p, rna_nb=rna_nb, n_batches=n_batches,
                         rna_stats=rna_stats, msi_zero_value=msi_zero_value)
        self.spatial = int(p.get("spatial_k", 0)) > 0
        self.n_batches = n_batches
        extra = n_batches if n_batches > 1 else 0
        h, d = self.d_model, self.d_latent
        self.experts = nn.ModuleDict({
            m: mlp(dims[m] * (2 if self.spatial else 1) + extra, h, 2 * d, int(p.get("n_layers", 2)),
                   float(p.get("dropout", 0.1)))
            for m in MODALITIES})

    def encode(self, batch):
        vis = batch.visible  # (B, 2): targets are the nodes
        T = torch.ones(len(batch), self.d_latent, device=vis.device)  # prior expert precision
        num = torch.zeros_like(T)
        for j, m in enumerate(MODALITIES):
            x = batch.x[m]
            if self.spatial:
                x = torch.cat([x, batch.extra["context"][m]], 1)
            if self.n_batches > 1:
                x = torch.cat([x, F.one_hot(batch.batch, self.n_batches).to(x.dtype)], 1)
            mu, logvar = self.experts[m](x).chunk(2, -1)
            prec = torch.exp(-logvar.clamp(-8, 8)) * vis[:, j:j + 1].to(mu.dtype)
            T = T + prec
            num = num + prec * mu
        mu, var = num / T, 1.0 / T
        kl = 0.5 * (var + mu ** 2 - 1.0 - torch.log(var)).sum(1)
        z = mu + torch.sqrt(var) * torch.randn_like(mu) if self.training else mu
        return z, kl
