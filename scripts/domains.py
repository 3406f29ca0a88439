"""Adapter: spatial domains from one embedding (+ metrics against truth when known)."""

import json

import anndata as ad
import pandas as pd

from spatialfuse.constants import Key
from spatialfuse.domains import domain_metrics, find_domains
from spatialfuse.ingest import read_truth_domains
from spatialfuse.logging_utils import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
p = sm.params.domains
emb = ad.read_h5ad(sm.input.embedding)
model = sm.wildcards.model
Z = emb.obsm[Key.obsm.embedding(model)]
xy = emb.obsm[Key.obsm.spatial]
labels = find_domains(Z, xy, method=p["method"], n_domains=p["n_domains"],
                      resolution=p["resolution"], refine=p["refine"], seed=sm.params.seed)
truth = read_truth_domains(sm.input.truth[0] if sm.input.truth else None, emb.obs_names)
metrics = domain_metrics(labels, xy, truth)
metrics.update(model=model, method=p["method"])
log.info("domains %s: %s", model, metrics)
pd.DataFrame({"barcode": emb.obs_names, "domain": labels}).to_csv(
    sm.output.domains, sep="\t", index=False)
with open(sm.output.metrics, "w") as fh:
    json.dump(metrics, fh, indent=2)
