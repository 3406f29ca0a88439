"""MSI ingest benchmark: peak memory and time to read a large processed-mode imzML.

Generates processed-mode (centroid) imzML/ibd pairs of N pixels on a square raster, whose spectra
carry peaks from a common list of ``--axis-peaks`` m/z values (default 1,000, 100–1,000 m/z) with
2 ppm (SD) m/z jitter: each spectrum holds each peak with probability
``--peaks-per-spectrum / --axis-peaks`` (binomially varying length). The .ibd is written block by
block with numpy (``spatialfuse.io.ImzMLStreamWriter``), never holding the whole file.

Then, each in a fresh process so that peak RSS is its own:
* ``read``  — ``spatialfuse.io.read_imzml``: XML metadata, common m/z axis by ppm binning,
  streamed binning of every spectrum into a sparse matrix;
* ``ingest`` — ``read_imzml`` followed by ``preprocess_msi`` (tissue mask, matrix-peak flags,
  TIC normalisation, log transform), i.e. the MSI half of the ingest rule.

Printed per size: file sizes, generation time, wall time and peak RSS (``ru_maxrss``) of each
phase (VmHWM of a fresh process), stored non-zeros, and the recovered axis size (must equal ``--axis-peaks``). A linear fit
of peak RSS against pixels shows the growth and extrapolates to sizes not run.

    flock /tmp/spatialfuse_heavy.lock .venv/bin/python benchmarks/ingest_benchmark.py \\
        --pixels 10000 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(path: Path, n_pixels: int, axis_peaks: int = 1000, peaks_per_spectrum: int = 100,
             seed: int = 0, block: int = 5000) -> tuple[Path, Path, np.ndarray]:
    """Write a processed-mode centroid imzML of ``n_pixels`` spectra; returns the paths and the
    true m/z axis."""
    from spatialfuse.io import ImzMLStreamWriter

    rng = np.random.default_rng(seed)
    # peaks at least 100 ppm apart, so that a 10 ppm binning can separate them
    axis = np.geomspace(100.0, 1000.0, axis_peaks) * (1 + rng.uniform(-2e-5, 2e-5, axis_peaks))
    strength = rng.lognormal(0.0, 1.0, axis_peaks)
    width = int(np.ceil(np.sqrt(n_pixels)))
    frac = min(1.0, peaks_per_spectrum / axis_peaks)
    w = ImzMLStreamWriter(path, mode="processed", spectrum_type="centroid", pixel_size_um=10.0)
    for a in range(0, n_pixels, block):
        k = min(block, n_pixels - a)
        idx = np.arange(a, a + k)
        coords = np.stack([idx % width + 1, idx // width + 1], 1)
        rows, cols = np.nonzero(rng.random((k, axis_peaks)) < frac)
        mz = axis[cols] * (1 + rng.normal(0.0, 2e-6, cols.size))
        inten = (strength[cols] * rng.lognormal(0.0, 0.5, cols.size) * 1000).astype(np.float32)
        cut = np.cumsum(np.bincount(rows, minlength=k))[:-1]
        w.add(coords, np.split(inten, cut), np.split(mz, cut))
    imz, ibd = w.close()
    return imz, ibd, axis


def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM). Not ``ru_maxrss``: that keeps the high-water mark of
    the forked parent across exec, so a child would report at least its parent's size."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(phase: str, imzml: str) -> dict:
    """Run one phase in this (fresh) process; returns wall time and peak RSS."""
    import logging

    logging.disable(logging.WARNING)
    from spatialfuse.io import read_imzml
    from spatialfuse.msi import preprocess_msi

    base_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    a = read_imzml(imzml, sample="bench", mz_tolerance_ppm=10.0)
    t_read = time.perf_counter() - t0
    out = {"read_s": t_read, "n_vars": int(a.n_vars), "nnz": int(a.X.nnz),
           "import_rss_mb": base_rss}
    if phase == "ingest":
        t1 = time.perf_counter()
        a, _ = preprocess_msi(a, normalisation="tic", sample="bench")
        out["preprocess_s"] = time.perf_counter() - t1
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _run_phase(phase: str, imzml: Path) -> dict:
    p = subprocess.run([sys.executable, __file__, "--_phase", phase, str(imzml)],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    ap.add_argument("--axis-peaks", type=int, default=1000)
    ap.add_argument("--peaks-per-spectrum", type=int, default=100)
    ap.add_argument("--phases", nargs="+", default=["read", "ingest"], choices=["read", "ingest"])
    ap.add_argument("--workdir", default=None, help="where the files go (default: a temp dir)")
    ap.add_argument("--_phase", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._phase:
        print(json.dumps(_measure(*args._phase)))
        return

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.pixels:
            t0 = time.perf_counter()
            imz, ibd, axis = generate(Path(tmp) / f"p{n}.imzML", n, args.axis_peaks,
                                      args.peaks_per_spectrum)
            row = {"pixels": n, "gen_s": time.perf_counter() - t0,
                   "ibd_mb": ibd.stat().st_size / 2**20, "imzml_mb": imz.stat().st_size / 2**20}
            for ph in args.phases:
                r = _run_phase(ph, imz)
                row[f"{ph}_s"] = r["read_s"] + r.get("preprocess_s", 0.0)
                row[f"{ph}_rss_mb"] = r["peak_rss_mb"]
                row.update(n_vars=r["n_vars"], nnz=r["nnz"], import_rss_mb=r["import_rss_mb"])
            rows.append(row)
            imz.unlink()
            ibd.unlink()
            print("  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items()), flush=True)

    print(f"\nprocessed-mode centroid imzML, {args.axis_peaks} axis peaks, "
          f"~{args.peaks_per_spectrum} peaks per spectrum")
    hdr = ["pixels", "nnz", "n_vars", "ibd_mb", "imzml_mb", "gen_s"] + \
        [f"{ph}_{m}" for ph in args.phases for m in ("s", "rss_mb")]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(f"{r[h]:.1f}" if isinstance(r[h], float) else f"{r[h]:,}"
                               for h in hdr) + " |")
    if len(rows) >= 2:
        px = np.array([r["pixels"] for r in rows], float)
        for ph in args.phases:
            for m, unit in (("rss_mb", "MB"), ("s", "s")):
                y = np.array([r[f"{ph}_{m}"] for r in rows])
                slope, icpt = np.polyfit(px, y, 1)
                fit = f"{ph} {m}: {icpt:.0f} {unit} + {slope * 1e6:.0f} {unit} per 10^6 pixels"
                if px.max() < 1e6:
                    fit += f" -> extrapolated to 10^6 pixels: {icpt + slope * 1e6:.0f} {unit}"
                print(fit)


if __name__ == "__main__":
    main()
