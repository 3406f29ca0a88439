"""Visium HD ingest benchmark: time and peak memory of the whole ingest (``run_ingest``) of one
HD sample, for each pooling setting (``ingest.st.visium_hd_pool_um``).

The sample is a Space Ranger HD ``outs/`` folder and an imzML, given with ``--st``/``--msi``, or
simulated here (``--simulate``): the demo simulator's whole 6.5 mm capture area as 16 µm bins
(``DemoParams(st_bin_um=16)``, 300 genes, 60 m/z, 30 µm MSI pixels by default; ~66,000 tissue
bins, ~36,000 pixels). Each setting runs in a fresh process, so its peak RSS (``ru_maxrss``) is
its own; printed per setting: observations after pooling, MSI pixels, wall and CPU seconds,
peak RSS.

    .venv/bin/python benchmarks/ingest_hd_benchmark.py --simulate --pool msi_pixel 48 null
    .venv/bin/python benchmarks/ingest_hd_benchmark.py --st outs/ --msi s.imzML --bin-um 8 \\
        --pool msi_pixel null
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _measure(st: str, msi: str, bin_um: int, pool: str) -> dict:
    from spatialfuse.ingest import run_ingest

    setting = None if pool == "null" else (pool if pool == "msi_pixel" else float(pool))
    t0, c0 = time.perf_counter(), time.process_time()
    out = run_ingest(st, msi, {"st": {"visium_hd_bin_um": bin_um, "visium_hd_pool_um": setting}},
                     sample="bench")
    return {"pool": pool, "st_obs": int(out["st"].n_obs),
            "side_um": float(out["qc"]["st_meta"]["spot_diameter_um"]),
            "msi_pixels": int(out["msi"].n_obs),
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def simulate(d: Path, capture_um: float, bin_um: float, pixel_um: float) -> tuple[Path, Path]:
    from spatialfuse.simulate import DemoParams, simulate_sample, write_demo_sample

    sim = simulate_sample(DemoParams(seed=0, capture_size_um=capture_um, st_bin_um=bin_um,
                                     n_genes=300, n_metabolites=60,
                                     msi_pixel_size_um=pixel_um))
    st, imzml = d / "st", d / "msi" / "s.imzML"
    write_demo_sample(sim, st, imzml, d / "truth")
    return st, imzml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--st", help="Space Ranger HD outs/ folder")
    ap.add_argument("--msi", help="imzML (or .h5ad) of the same sample")
    ap.add_argument("--bin-um", type=int, default=16, help="the HD bin size to read (2, 8, 16)")
    ap.add_argument("--simulate", action="store_true",
                    help="simulate a whole HD capture area instead of --st/--msi")
    ap.add_argument("--capture-um", type=float, default=6500.0)
    ap.add_argument("--pixel-um", type=float, default=30.0, help="simulated MSI pixel (µm)")
    ap.add_argument("--pool", nargs="+", default=["msi_pixel", "null"],
                    help="visium_hd_pool_um settings to run: msi_pixel, null or a side in µm")
    ap.add_argument("--_run", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        st, msi, bin_um, pool = args._run
        print(json.dumps(_measure(st, msi, int(bin_um), pool)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.simulate:
            t0 = time.perf_counter()
            st, msi = simulate(Path(tmp), args.capture_um, float(args.bin_um), args.pixel_um)
            print(f"simulated a {args.capture_um:g} um area of {args.bin_um} um bins, "
                  f"{args.pixel_um:g} um MSI pixels, in {time.perf_counter() - t0:.0f} s", flush=True)
        elif args.st and args.msi:
            st, msi = Path(args.st), Path(args.msi)
        else:
            ap.error("give --st and --msi, or --simulate")
        rows = []
        for pool in args.pool:
            p = subprocess.run([sys.executable, __file__, "--_run", str(st), str(msi),
                                str(args.bin_um), pool], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1",
                                    "OPENBLAS_NUM_THREADS": "1"})
            if p.returncode:
                sys.exit(f"pool {pool}: ingest failed\n{p.stderr[-2000:]}")
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    hdr = ["pool", "side_um", "st_obs", "msi_pixels", "wall_s", "cpu_s", "peak_rss_mb"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(f"{r[h]:,.1f}" if isinstance(r[h], float) else
                               (f"{r[h]:,}" if isinstance(r[h], int) else str(r[h]))
                               for h in hdr) + " |")


if __name__ == "__main__":
    main()
