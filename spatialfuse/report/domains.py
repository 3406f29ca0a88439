"""Consistent domain labels across models and samples, so one colour means one domain.

Domain labels are arbitrary integers per clustering: domain 2 of the PCA model and domain 2 of
the VAE need not be the same tissue region, nor domain 2 of two samples. Before plotting, every
labelling is renumbered onto a *canonical* labelling of its sample by one-to-one (Hungarian)
matching:

* within a sample, by spatial overlap (the contingency table of the two labellings of the
  same spots) with the truth when known (demo, benchmark), else with the reference model;
* across samples without truth, the reference model's domains are matched to the anchor
  sample's canonical domains by their mean expression profile (correlation over shared genes),
  since the spots differ between sections.

Labels left over (a model with more domains than the reference) get fresh ids after the
reference's, so they never borrow another domain's colour.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment


def _assign(score: np.ndarray, labels: np.ndarray, refs: np.ndarray) -> dict:
    """Maximum-score one-to-one assignment of ``labels`` (rows) to ``refs`` (columns); rows left
    over get fresh ids after ``max(refs)``."""
    mapping = {}
    if len(labels) and len(refs):
        rows, cols = linear_sum_assignment(np.nan_to_num(score, nan=-1e9), maximize=True)
        mapping = {labels[i]: int(refs[j]) for i, j in zip(rows, cols)}
    nxt = int(refs.max()) + 1 if len(refs) else 0
    for lab in labels:
        if lab not in mapping:
            mapping[lab] = nxt
            nxt += 1
    return mapping


def match_labels(labels, reference) -> dict:
    """Map each label in ``labels`` to the ``reference`` label it shares most spots with,
    one-to-one (Hungarian on the contingency table). Negative reference labels (outside the
    tissue in a truth table) are ignored. Returns ``{label: reference id (int)}``."""
    labels, reference = np.asarray(labels), np.asarray(reference)
    if labels.shape != reference.shape:
        raise ValueError(f"labels ({labels.shape}) and reference ({reference.shape}) differ")
    keep = reference.astype(float) >= 0
    labs, li = np.unique(labels, return_inverse=True)
    refs = np.unique(reference[keep]).astype(int)
    ri = np.searchsorted(refs, reference[keep].astype(int))
    table = np.zeros((len(labs), len(refs)))
    np.add.at(table, (li[keep], ri), 1)
    return _assign(table, labs, refs)


def domain_profiles(X, labels, features) -> pd.DataFrame:
    """Mean of ``X`` (spots × features, dense or sparse) per domain: a domains × features table."""
    labels = np.asarray(labels)
    labs, inv = np.unique(labels, return_inverse=True)
    ind = sp.csr_matrix((np.ones(len(labels)), (inv, np.arange(len(labels)))),
                        shape=(len(labs), len(labels)))
    sums = ind @ X
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    counts = np.asarray(ind.sum(1)).ravel()[:, None]
    return pd.DataFrame(sums / counts, index=labs, columns=list(features))


def match_profiles(profiles: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Map each domain (row of ``profiles``) to the ``reference`` domain whose mean profile it
    correlates best with, one-to-one. Features are the shared columns, each standardised over
    all domains of both tables so that highly expressed genes do not dominate."""
    common = [c for c in profiles.columns if c in set(reference.columns)]
    refs = np.asarray(reference.index).astype(int)
    if not common:
        return _assign(np.zeros((len(profiles), len(refs))), np.asarray(profiles.index), refs)
    both = pd.concat([profiles[common], reference[common]])
    z = (both - both.mean()) / both.std(ddof=0).replace(0, np.nan)
    z = z.fillna(0.0).to_numpy()
    a, b = z[: len(profiles)], z[len(profiles):]
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    corr = (a @ b.T) / np.where(denom > 0, denom, np.nan)
    return _assign(corr, np.asarray(profiles.index), refs)


def harmonise_domains(
    labels: dict[str, dict[str, pd.Series]],
    truth: dict[str, pd.Series | None],
    reference_model: str,
    profiles: dict[str, tuple] | None = None,
) -> tuple[dict[str, dict[str, pd.Series]], pd.DataFrame]:
    """Renumber every sample × model labelling onto canonical ids.

    ``labels``: sample → model → domain per barcode (Series indexed by barcode);
    ``truth``: sample → true domain per barcode or None; ``profiles``: sample → (X, barcodes,
    features) used to match samples without truth to the anchor sample (the first sample with
    truth, else the first sample). Returns (sample → model → matched id per barcode, with a
    ``"truth"`` entry where known; the mapping table: sample, model, domain, matched, n_spots).
    """
    samples = list(labels)
    anchor = next((s for s in samples if truth.get(s) is not None), samples[0] if samples else None)
    canonical: dict[str, pd.Series] = {}
    out: dict[str, dict[str, pd.Series]] = {}
    rows = []
    for s in samples:
        models = labels[s]
        ref_model = reference_model if reference_model in models else next(iter(models))
        t = truth.get(s)
        if t is not None:
            canonical[s] = t.astype(int)
        elif s == anchor:
            ref = models[ref_model]
            u = np.unique(ref)
            canonical[s] = ref.map(dict(zip(u, range(len(u))))).astype(int)
        else:
            ref = models[ref_model]
            mapping = None
            if profiles and s in profiles and anchor in profiles:
                X, bc, feats = profiles[s]
                Xa, bca, featsa = profiles[anchor]
                anchor_labels = canonical[anchor].reindex(bca).fillna(-1).to_numpy()
                pa = domain_profiles(Xa, anchor_labels, featsa)
                pa = pa.loc[pa.index >= 0]
                mapping = match_profiles(domain_profiles(X, ref.reindex(bc).to_numpy(), feats), pa)
            if mapping is None:  # no expression to compare: keep the model's own numbering
                u = np.unique(ref)
                mapping = dict(zip(u, range(len(u))))
            canonical[s] = ref.map(mapping).astype(int)
        out[s] = {}
        if t is not None:
            out[s]["truth"] = canonical[s]
        for m, lab in models.items():
            common = lab.index.intersection(canonical[s].index)
            mapping = match_labels(lab.loc[common].to_numpy(), canonical[s].loc[common].to_numpy())
            matched = lab.map(mapping)
            out[s][m] = matched.astype(int)
            counts = lab.value_counts()
            rows += [(s, m, d, int(mapping[d]), int(counts.get(d, 0))) for d in sorted(mapping)]
    table = pd.DataFrame(rows, columns=["sample", "model", "domain", "matched", "n_spots"])
    return out, table
