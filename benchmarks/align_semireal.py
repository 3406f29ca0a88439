"""Registration on the semi-real sections: REAL legacy-ST breast sections, SIMULATED MSI.

The Visium-size cases of ``align_benchmark.py`` are fully simulated; here the ST side is real
(Ståhl et al. 2016, four serial sections as redistributed by PASTE: 251–264 spots detected on a
jittered 200 µm lattice, no array row/column, 100 µm spots) and each is paired with a simulated
50 µm MSI raster (``spatialfuse.simulate.semireal``; rotation within ±20°, no warp, tissue
reaching 150 µm beyond the outermost spot centres). Per section it prints the error against the
simulator's per-pixel truth (median / p90 µm, median in MSI pixels), the fitted scales (truth
1.0), the tissue Dice, the CPU seconds of the align job, the stage's own uncertainty estimate
(qc.json ``affine_uncertainty_um``) and whether the registration was flagged.

    flock /tmp/spatialfuse_heavy.lock .venv/bin/python benchmarks/align_semireal.py \
        --seeds 0 1 [--keep DIR] [--set align.KEY=VALUE ...]

``--from DIR``: no simulation and no workflow; DIR holds ``seed<N>/`` folders of an earlier
run (this script's ``--keep`` or ``impute_benchmark.py --semireal --keep``), and the
registration is rerun in this process on their ingested sections (CPU = registration + QC +
matching, ``run_align``), e.g. to compare code or settings on the very same sections.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from impute_benchmark import _set, real_data_dir, semireal_sheet, write_run_config  # noqa: E402

COLUMNS = ["truth_error_um_median", "truth_error_um_p90", "truth_error_pixels_median",
           "scale_x", "scale_y", "tissue_dice", "cpu_s"]


def _row(seed: int, sample: str, qc: dict, cpu_s: float) -> dict:
    T = qc.get("transform", {})
    return {"seed": seed, "sample": sample,
            **{k: qc.get(k) for k in COLUMNS[:3]},
            "scale_x": T.get("scale_x"), "scale_y": T.get("scale_y"),
            "tissue_dice": qc.get("tissue_dice"), "cpu_s": cpu_s,
            "affine_uncertainty_um": qc.get("affine_uncertainty_um"), "flagged": qc.get("flagged")}


def run_workflow(wd: Path, seed: int, cores: str, edits: list[str], data: Path,
                 sections: list[int]) -> list[dict]:
    """Write the semi-real sections of this MSI seed and run the workflow up to align."""
    write_run_config(wd, seed, edits)
    (wd / "config" / "samples.tsv").write_text(semireal_sheet(wd, seed, data, sections).read_text())
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
                    str(wd), "--cores", cores, "--quiet", "--until", "align"], check=True)
    rows = []
    for qf in sorted((wd / "results").glob("*/align/qc.json")):
        sample = qf.parents[1].name
        bench = pd.read_csv(wd / "results" / "benchmarks" / "align" / f"{sample}.tsv", sep="\t")
        cpu = float(bench["cpu_time"].iloc[-1]) if "cpu_time" in bench else float("nan")
        rows.append(_row(seed, sample, json.loads(qf.read_text()), cpu))
    return rows


def realign(wd: Path, seed: int, edits: list[str]) -> list[dict]:
    """Rerun ``run_align`` in this process on the ingested sections of an earlier run."""
    import anndata as ad

    from spatialfuse.align import run_align

    cfg = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    for e in edits:
        k, v = e.split("=", 1)
        _set(cfg, k, v)
    rows = []
    for ing in sorted((wd / "results").glob("*/ingest")):
        sample = ing.parent.name
        truth = wd / "semireal" / sample / "truth"
        if not (ing / "st.h5ad").is_file() or not truth.is_dir():
            continue
        st, msi = ad.read_h5ad(ing / "st.h5ad"), ad.read_h5ad(ing / "msi.h5ad")
        t0 = time.process_time()
        out = run_align(st, msi, cfg.get("align", {}), sample=sample, truth_dir=str(truth))
        rows.append(_row(seed, sample, out["qc"], time.process_time() - t0))
        print(f"  {sample}: {rows[-1]['truth_error_um_median']:.1f} um", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--cores", default="2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config edit, e.g. align.nonrigid=false (repeatable)")
    ap.add_argument("--keep", help="folder for the working directories (default: temporary)")
    ap.add_argument("--real-data", help="shared/data/real folder (default: beside the checkout)")
    ap.add_argument("--from", dest="from_dir", help="rerun align in-process on DIR/seed<N>/")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            if args.from_dir:
                wd = Path(args.from_dir) / f"seed{seed}"
                if not (wd / "results").is_dir():
                    sys.exit(f"--from: no results in {wd}")
                rows += realign(wd, seed, args.set)
            else:
                wd = Path(args.keep or tmp) / f"seed{seed}"
                rows += run_workflow(wd, seed, args.cores, args.set,
                                     real_data_dir(args.real_data), args.sections)
    df = pd.DataFrame(rows)
    if df.empty:
        sys.exit("no semi-real section was registered")
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(df.to_string(index=False))
    print(f"\nall {len(df)} runs: median TRE {df['truth_error_um_median'].median():.1f} um "
          f"(range {df['truth_error_um_median'].min():.1f}–{df['truth_error_um_median'].max():.1f}), "
          f"p90 {df['truth_error_um_p90'].median():.1f} um, "
          f"{df['truth_error_pixels_median'].median():.2f} px; mean scale "
          f"{df[['scale_x', 'scale_y']].to_numpy().mean():.3f} (truth 1.000); "
          f"Dice {df['tissue_dice'].median():.3f}; CPU {df['cpu_s'].median():.1f} s median; "
          f"uncertainty estimate {df['affine_uncertainty_um'].min():.1f}–"
          f"{df['affine_uncertainty_um'].max():.1f} um; flagged {int(df['flagged'].sum())}/{len(df)}")


if __name__ == "__main__":
    main()
