"""Adapter: train one joint model on one sample; write embedding, checkpoint, log, metrics."""

import json

import anndata as ad
import torch

from spatialfuse.constants import Key
from spatialfuse.io import read_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.models import run_model

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
model = sm.wildcards.model
rna, msi, _ = read_paired(sm.input.paired)
out = run_model(model, rna, msi, dict(sm.params.model), seed=sm.params.seed, device=sm.params.device)
emb = ad.AnnData(obs=rna.obs[[]].copy())
emb.obsm[Key.obsm.embedding(model)] = out["embedding"]
emb.obsm[Key.obsm.spatial] = rna.obsm[Key.obsm.spatial]
emb.uns[Key.uns.spatialfuse] = {"model": model, "params": dict(sm.params.model)}
emb.write_h5ad(sm.output.embedding)
torch.save(out["checkpoint"], sm.output.checkpoint)
out["train_log"].to_csv(sm.output.train_log, sep="\t", index=False)
with open(sm.output.metrics, "w") as fh:
    json.dump(out["metrics"], fh, indent=2, default=str)
