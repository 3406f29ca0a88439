"""Run the published SpatialMETA (PyPI ``spatialMETA`` 0.0.3) alignment module on one simulated
MSI/ST pair; run it with the Python of a separate virtual environment where SpatialMETA is
installed (never this project's)::

    /tmp/smv/bin/python benchmarks/peer_spatialmeta_align.py st.h5ad sm.h5ad out.npy \
        [seed] [initial_scale|auto] [diffeo 0|1]

``align_benchmark.py --peers spatialmeta`` writes the inputs, calls this script and scores the
output against the simulator's truth. Inputs, as SpatialMETA's alignment tutorial expects them:

* ``st.h5ad``: raw counts in ``X``, spot centres in ``obsm["spatial"]`` (full-resolution pixels;
  here 1 px = 1 µm), the section's histology image in ``uns["spatial"][lib]["images"]["hires"]``
  with ``scalefactors`` ``tissue_hires_scalef`` and ``spot_diameter_fullres``;
* ``sm.h5ad``: raw MSI intensities of the on-tissue pixels in ``X``, pixel-index coordinates in
  ``obsm["spatial"]`` *after* the manual rotation/flip the tutorial applies by hand
  (``smt.pp.spot_transform_by_manual``).

Steps follow the tutorial (``docs/source/notebooks/Alignment.ipynb``): metabolites total-normalised
to 1e3, genes left as counts, ``AlignmentModule(adata_st, adata_sm, n_latent=10)``,
``fit_vae(max_epoch=128)``, ``get_rasterized_feature_map()``,
``random_sample_inside_image_spot(data)``, ``fit_alignment(data, debug_path=...)`` with its
defaults (500 iterations; rotation, translation and per-axis scale fitted to the tissue outline
sampled from the histology image; its diffeomorphic part is off by default), and the iteration
with the lowest point-alignment loss is kept (``result[best]["pointsIt"]``).
``initial_scale`` (hires pixels per SM coordinate unit) is its documented ``fit_alignment``
argument; ``auto`` keeps its own estimate. ``diffeo 1`` switches its diffeomorphic part on
(``fit_alignment(diffeo=True)``). Writes the aligned
position of every SM pixel in full-resolution ST pixels (``.npy``, n × 2); prints CPU and wall
seconds of the fit (data loading excluded) and peak memory.

Four things are patched, none touching the method: SciPy ≥ 1.11 renamed
``Delaunay.vertices`` to ``simplices`` (its ``alpha_shape`` uses the old name: an alias is added); the module
uses ``os`` without importing it (added);
``fit_alignment`` calls
``os.path.exists(debug_path)`` so a path must be given, and then it draws a matplotlib figure
every 10 iterations; the module's ``plt`` is replaced by a stand-in that draws nothing, so the CPU
time is the alignment's own. Its plotting module imports torchvision (see
``peer_spatialmeta.py``): run with ``SPATIALMETA_NO_TORCHVISION=1``.
"""

import os
import resource
import sys
import tempfile
import time

import numpy as np


class _NoPlot:
    """Accepts any call or attribute and does nothing (stands in for matplotlib.pyplot)."""

    def __getattr__(self, name):
        return self

    def __call__(self, *a, **k):
        return self

    def __iter__(self):
        return iter((self, _NoPlotAxes()))

    def __getitem__(self, i):
        return self


class _NoPlotAxes(_NoPlot):
    def flatten(self):
        return [_NoPlot() for _ in range(4)]


def main(st_path: str, sm_path: str, out_path: str, seed: str = "0", initial_scale: str = "auto",
         diffeo: str = "0") -> None:
    seed = int(seed)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if os.environ.get("SPATIALMETA_NO_TORCHVISION"):
        from peer_spatialmeta import _torchvision_stand_in

        _torchvision_stand_in()
    import anndata as ad
    import scanpy as sc
    import torch
    from scipy.spatial import Delaunay
    from spatialmeta.model import _alignment_module
    from spatialmeta.model import AlignmentModule

    _alignment_module.plt = _NoPlot()
    _alignment_module.os = os  # fit_alignment uses os without importing it
    if not hasattr(Delaunay, "vertices"):  # removed in SciPy 1.11; SpatialMETA's alpha_shape uses it
        Delaunay.vertices = property(lambda tri: tri.simplices)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    adata_st, adata_sm = ad.read_h5ad(st_path), ad.read_h5ad(sm_path)
    c0, t0 = time.process_time(), time.perf_counter()
    sc.pp.normalize_total(adata_sm, target_sum=1e3)
    model = AlignmentModule(adata_st=adata_st, adata_sm=adata_sm, n_latent=10, device="cpu")
    model.fit_vae(max_epoch=128, random_seed=seed)
    data = model.get_rasterized_feature_map()
    data = model.random_sample_inside_image_spot(data)
    with tempfile.TemporaryDirectory() as debug:
        result = model.fit_alignment(
            data, debug_path=debug, diffeo=diffeo == "1",
            initial_scale=None if initial_scale == "auto" else float(initial_scale))
    best = min(result, key=lambda k: result[k]["loss"][-1])
    scale = data["data"]["scale"]
    pts = np.asarray(result[best]["pointsIt"], dtype=float) / scale  # hires px -> full-res px
    np.save(out_path, pts)
    print(f"cpu_s={time.process_time() - c0:.3f} wall_s={time.perf_counter() - t0:.3f} "
          f"best_iter={best} theta={result[best]['theta']:.4f} "
          f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:7])
