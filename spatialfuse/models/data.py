"""Model inputs: per-modality standardised feature matrices on the paired spots.

``ModelInputs`` is what every model (and the cross-modal prediction API, :mod:`.api`) reads:

* ``rna``: spots × genes, log-normalised expression (``X`` of the ingested RNA) of the selected
  highly variable genes, standardised per gene (mean 0, SD 1);
* ``msi``: spots × m/z, log1p of normalised intensities (``X`` of the paired MSI), standardised;
* ``rna_counts``: raw UMI counts of the same genes (for negative-binomial likelihoods);
* ``rna_size_factor``: per spot, the factor that turned counts into normalised values
  (``rna_lognorm = log1p(counts * size_factor)``), recovered from the data themselves;
* ``xy``: spot centres in µm; ``batch``: integer batch code per spot (multi-sample integration).

Standardised values map back to log-normalised units with :meth:`ModelInputs.to_lognormal`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..constants import Key

if TYPE_CHECKING:  # anndata is only needed by callers that hold AnnData
    import anndata as ad

MODALITIES = ("rna", "msi")


@dataclass
class ModelInputs:
    rna: np.ndarray  # spots × HVG, log-normalised then standardised (float32)
    msi: np.ndarray  # spots × m/z, log-normalised then standardised (float32)
    rna_counts: np.ndarray | None  # spots × HVG raw counts, for count likelihoods
    xy: np.ndarray  # spots × 2, µm
    obs_names: list[str]
    rna_features: list[str]
    msi_features: list[str]
    rna_mean: np.ndarray | None = None  # per gene, log-normalised units (before standardising)
    rna_sd: np.ndarray | None = None
    msi_mean: np.ndarray | None = None
    msi_sd: np.ndarray | None = None
    rna_size_factor: np.ndarray | None = None  # per spot: lognorm = log1p(counts * factor)
    batch: np.ndarray | None = None  # per spot integer batch code (None = one batch)
    batch_names: list[str] = field(default_factory=list)

    @property
    def n_spots(self) -> int:
        return self.rna.shape[0]

    @property
    def n_batches(self) -> int:
        return 1 if self.batch is None else int(self.batch.max()) + 1

    def to_lognormal(self, modality: str, values: np.ndarray) -> np.ndarray:
        """Standardised values (as in ``rna``/``msi``) → log-normalised units (as in ``X``)."""
        mean, sd = (self.rna_mean, self.rna_sd) if modality == "rna" else (self.msi_mean, self.msi_sd)
        if mean is None:
            raise ValueError("these inputs carry no standardisation statistics")
        return np.asarray(values, np.float64) * sd + mean

    def from_lognormal(self, modality: str, values: np.ndarray) -> np.ndarray:
        """Log-normalised units → standardised (inverse of :meth:`to_lognormal`)."""
        mean, sd = (self.rna_mean, self.rna_sd) if modality == "rna" else (self.msi_mean, self.msi_sd)
        return ((np.asarray(values, np.float64) - mean) / sd).astype(np.float32)


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _standardise(X: np.ndarray, rows: np.ndarray | None = None):
    """(X - mean) / sd per column, statistics from ``rows`` (all rows when None)."""
    ref = X if rows is None else X[rows]
    mu, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return ((X - mu) / sd).astype(np.float32), mu, sd


def _size_factors(lognorm: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per spot f with lognorm = log1p(counts * f), read off the nonzero entries (median)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(counts > 0, np.expm1(lognorm) / counts, np.nan)
    if np.isfinite(ratio).any():
        with warnings.catch_warnings():  # a spot without counts: NaN, filled below
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            f = np.nanmedian(np.where(np.isfinite(ratio), ratio, np.nan), axis=1)
    else:
        f = np.ones(len(counts))
    return np.nan_to_num(f, nan=np.nanmedian(f) if np.isfinite(f).any() else 1.0).astype(np.float32)


def prepare_inputs(rna: ad.AnnData, msi: ad.AnnData, n_top_genes: int | None = None,
                   stats_mask: np.ndarray | None = None) -> ModelInputs:
    """Select highly variable genes (at most ``n_top_genes``), densify and standardise.

    ``stats_mask`` (bool per spot): compute the per-feature mean/SD on these spots only (for
    strictly held-out evaluation, pass the training spots); default all spots.
    """
    if list(rna.obs_names) != list(msi.obs_names):
        raise ValueError("rna and msi must be paired on the same spots")
    hv = rna.var[Key.var.highly_variable].to_numpy() if Key.var.highly_variable in rna.var else \
        np.ones(rna.n_vars, bool)
    idx = np.nonzero(hv)[0]
    if n_top_genes is not None and idx.size > n_top_genes:
        disp = rna.var["dispersions_norm"].to_numpy()[idx] if "dispersions_norm" in rna.var else \
            _dense(rna.X[:, idx]).var(0)
        idx = idx[np.argsort(-np.nan_to_num(disp, nan=-np.inf))[:n_top_genes]]
        idx.sort()
    Xr = _dense(rna.X[:, idx]).astype(np.float64)
    counts = _dense(rna.layers[Key.layers.counts][:, idx]).astype(np.float32) \
        if Key.layers.counts in rna.layers else None
    Xm = _dense(msi.X).astype(np.float64)
    rows = None if stats_mask is None else np.asarray(stats_mask, bool)
    Zr, mr, sr = _standardise(Xr, rows)
    Zm, mm, sm = _standardise(Xm, rows)
    return ModelInputs(
        rna=Zr, msi=Zm, rna_counts=counts,
        xy=np.asarray(rna.obsm[Key.obsm.spatial], float), obs_names=list(rna.obs_names),
        rna_features=list(rna.var_names[idx]), msi_features=list(msi.var_names),
        rna_mean=mr, rna_sd=sr, msi_mean=mm, msi_sd=sm,
        rna_size_factor=None if counts is None else _size_factors(Xr, counts),
    )


def concat_inputs(parts: list[ModelInputs], names: list[str]) -> ModelInputs:
    """Stack several samples' inputs (same genes and m/z features, in the same order) into one,
    with ``batch`` = the sample's position in ``parts``. Each part keeps its own per-sample
    standardisation (itself a first batch correction); the VAE's batch covariate does the rest.
    Coordinates are offset so that samples never touch (spatial graphs stay within a sample).
    """
    if len(parts) != len(names) or not parts:
        raise ValueError("one name per part, at least one part")
    ref = parts[0]
    for p, n in zip(parts, names):
        if p.rna_features != ref.rna_features or p.msi_features != ref.msi_features:
            raise ValueError(f"sample {n!r}: features differ from {names[0]!r}; select common "
                             "genes and m/z bins before concatenating")
    offs, xy = 0.0, []
    for p in parts:
        xy.append(p.xy - p.xy.min(0) + np.array([offs, 0.0]))
        offs = float(xy[-1][:, 0].max()) + 1e6
    has_counts = all(p.rna_counts is not None for p in parts)
    cat = np.concatenate
    return replace(
        ref, rna=cat([p.rna for p in parts]), msi=cat([p.msi for p in parts]),
        rna_counts=cat([p.rna_counts for p in parts]) if has_counts else None,
        rna_size_factor=cat([p.rna_size_factor for p in parts]) if has_counts else None,
        xy=cat(xy), obs_names=[f"{n}:{o}" for p, n in zip(parts, names) for o in p.obs_names],
        batch=cat([np.full(p.n_spots, i) for i, p in enumerate(parts)]).astype(np.int64),
        batch_names=list(names),
        # per-sample statistics differ: no single map back to log-normalised units
        rna_mean=None, rna_sd=None, msi_mean=None, msi_sd=None,
    )
