"""Two-dimensional UMAP of the joint embeddings of all samples, one projection per model."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def joint_umap(embeddings: dict[str, tuple[np.ndarray, np.ndarray]], *, seed: int = 0,
               max_spots: int = 20000, n_neighbors: int = 15) -> pd.DataFrame:
    """UMAP of the pooled embeddings of one model.

    ``embeddings``: sample → (barcodes, Z spots × dims). Each sample contributes at most
    ``max_spots / n_samples`` spots (a seeded random subset) so the projection stays seconds
    at Visium HD scale; embeddings of different widths are cut to the narrowest. Returns
    sample, barcode, umap1, umap2.
    """
    if not embeddings:
        return pd.DataFrame(columns=["sample", "barcode", "umap1", "umap2"])
    rng = np.random.default_rng(seed)
    per = max(1, int(max_spots) // len(embeddings))
    dim = min(np.asarray(z).shape[1] for _, z in embeddings.values())
    parts, keys = [], []
    for s, (bc, z) in embeddings.items():
        z = np.asarray(z, dtype=np.float32)[:, :dim]
        idx = (np.sort(rng.choice(len(bc), per, replace=False)) if len(bc) > per
               else np.arange(len(bc)))
        parts.append(z[idx])
        keys.append(pd.DataFrame({"sample": s, "barcode": np.asarray(bc)[idx]}))
    Z = np.vstack(parts)
    out = pd.concat(keys, ignore_index=True)
    if len(Z) < 4 or dim == 0:
        out["umap1"], out["umap2"] = (Z[:, 0] if dim else 0.0), (Z[:, 1] if dim > 1 else 0.0)
        return out
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs=1 with random_state; numba deprecations
        Y = umap.UMAP(n_neighbors=min(n_neighbors, len(Z) - 1), random_state=seed,
                      n_components=2).fit_transform(Z)
    out["umap1"], out["umap2"] = Y[:, 0], Y[:, 1]
    log.info("UMAP of %d spots × %d dims from %d sample(s)", len(Z), dim, len(embeddings))
    return out
