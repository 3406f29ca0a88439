"""Two-dimensional UMAP of each sample's joint embedding, one projection per sample and model.

The joint models are fitted on each section separately, so the latent axes of two sections are
unrelated: latent dimension 3 of one section's VAE has nothing to do with dimension 3 of the
next one's. A UMAP of the sections' pooled embeddings would place each section by the
arbitrary orientation of its latent space, not by its biology (the samples came out as
separate clouds, whatever the tissue). Each sample is therefore projected on its own; what the
report compares across samples is how well each model separates that sample's domains.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _project(Z: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    """Seeded 2-D UMAP of ``Z`` (spots × dims); fewer than 4 spots or dims are passed through."""
    if len(Z) < 4 or Z.shape[1] < 2:
        Y = np.zeros((len(Z), 2))
        Y[:, :min(2, Z.shape[1])] = Z[:, :2]
        return Y
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs=1 with random_state; numba deprecations
        return umap.UMAP(n_neighbors=min(n_neighbors, len(Z) - 1), random_state=seed,
                         n_components=2).fit_transform(Z)


def sample_umaps(embeddings: dict[str, tuple[np.ndarray, np.ndarray]], *, seed: int = 0,
                 max_spots: int = 20000, n_neighbors: int = 15) -> pd.DataFrame:
    """UMAP of each sample's embedding of one model, each sample projected on its own.

    ``embeddings``: sample → (barcodes, Z spots × dims). Each sample contributes at most
    ``max_spots / n_samples`` spots (a seeded random subset), so the projections together
    stay seconds at Visium HD scale. A sample's coordinates depend on its own embedding and
    the seed only. Returns sample, barcode, umap1, umap2.
    """
    cols = ["sample", "barcode", "umap1", "umap2"]
    if not embeddings:
        return pd.DataFrame(columns=cols)
    per = max(1, int(max_spots) // len(embeddings))
    parts = []
    for s, (bc, z) in embeddings.items():
        z = np.asarray(z, dtype=np.float32)
        rng = np.random.default_rng([seed, len(bc)])  # a sample's subset: its own size and the seed
        idx = (np.sort(rng.choice(len(bc), per, replace=False)) if len(bc) > per
               else np.arange(len(bc)))
        Y = _project(z[idx], seed, n_neighbors)
        parts.append(pd.DataFrame({"sample": s, "barcode": np.asarray(bc)[idx],
                                   "umap1": Y[:, 0], "umap2": Y[:, 1]}))
        log.info("UMAP of %s: %d spots × %d dims", s, len(idx), z.shape[1])
    return pd.concat(parts, ignore_index=True)[cols]


def tile_samples(umap: pd.DataFrame, gap: float = 0.25) -> tuple[pd.DataFrame, dict]:
    """Lay out per-sample projections side by side in one plane: each sample's UMAP scaled
    into a unit square (both axes by the same factor, so its shape is kept) and put on its
    own tile of a near-square grid, in the order the samples first appear. Returns the table
    with columns ``x``, ``y`` added and each sample's tile origin (lower left corner)."""
    samples = list(dict.fromkeys(umap["sample"]))
    ncol = max(1, int(np.ceil(np.sqrt(len(samples)))))
    out = umap.copy()
    out["x"], out["y"] = np.nan, np.nan
    origin = {}
    for i, s in enumerate(samples):
        sel = (out["sample"] == s).to_numpy()
        u = out.loc[sel, ["umap1", "umap2"]].to_numpy(float)
        lo, span = u.min(0), float(np.ptp(u, 0).max()) or 1.0
        shift = (1.0 - np.ptp(u, 0) / span) / 2  # centre the shorter axis in its tile
        ox, oy = (i % ncol) * (1 + gap), -(i // ncol) * (1 + 1.4 * gap)
        origin[s] = (ox, oy)
        out.loc[sel, "x"] = ox + shift[0] + (u[:, 0] - lo[0]) / span
        out.loc[sel, "y"] = oy + shift[1] + (u[:, 1] - lo[1]) / span
    return out, origin
