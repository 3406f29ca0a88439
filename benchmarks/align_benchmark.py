"""Registration benchmark: simulated MSI/Visium pairs with known transforms.

Each case is a simulated sample (``spatialfuse.simulate``) with a random rotation (0–360°),
mirror, scale (0.9–1.1) and smooth non-rigid warp (0–50 µm), an MSI pixel of 10–50 µm, and one
of these geometries: the usual blob; tissue cut at the capture edge with the MSI raster cropped
(partial overlap both ways); a disc (symmetric outline: only the inner structure tells rotation
and mirror); an adjacent section (the MSI section's tissue and domains deformed by a further
20 µm, short-wavelength field that no smooth registration should follow).

Methods, on the same cases:
* ``spatialfuse`` — automatic, landmark-free: coarse search + affine + B-spline (the default);
* ``spatialfuse-affine`` — the same without the non-rigid step;
* ``landmark-affine`` — MAGPIE's approach: a least-squares affine through 8 landmarks placed by a
  simulated annotator with 10 µm (SD) placement error in each section;
* ``spatialfuse+landmarks`` — the automatic refinement started from those landmarks;
* ``best-affine (truth fit)`` — the least-squares affine through the simulator's per-pixel truth:
  the lowest error any affine registration can reach (the rest is the non-rigid warp).

QC flag: each case's automatic registration is counted as flagged or not against "wrong"
(median TRE > 100 µm), and three deliberately wrong placements of each found transform (rotated
180°, mirrored, shifted 300 µm) must all be flagged.

Reported per case group and method: median and 90th-percentile target registration error (TRE,
µm, over MSI pixels that are mostly tissue, against the simulator's per-pixel truth), the median
TRE in MSI pixels, and CPU seconds per sample (registration only; the ``align`` column adds QC and
the exact-area resolution matching of the whole stage). Visium-size samples: 6.5 mm capture
area, ~4,000 array spots (~1,700 under tissue); at 10 µm pixels the MSI raster has ~3×10^5
pixels.

    python benchmarks/align_benchmark.py            # full (~15–25 min on 2 cores; run it under
                                                    # flock /tmp/spatialfuse_heavy.lock)
    python benchmarks/align_benchmark.py --quick    # a 3 mm capture area, fewer cases (~3 min)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialfuse.align.qc import truth_error_table  # noqa: E402
from spatialfuse.align.register import register_landmarks  # noqa: E402
from spatialfuse.align.stage import (  # noqa: E402
    DEFAULTS,
    assess_registration,
    prepare_inputs,
    register,
    run_align,
)
from spatialfuse.align.qc import wrong_placements  # noqa: E402
from spatialfuse.align.transform import Transform, fit_affine  # noqa: E402
from spatialfuse.simulate import DemoParams, simulate_sample, simulated_sections  # noqa: E402

GEOMETRIES = {
    "blob": {},
    "partial": {"tissue_offset_frac": 0.22, "msi_crop_frac": 0.2},
    "disc": {"outline_irregularity": 0.0},
    "adjacent": {"adjacent_section_um": 20.0},
}


def cases(quick: bool, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    pixels = (10.0, 20.0, 30.0, 40.0, 50.0)
    out = []
    per_geo = 2 if quick else 5
    for g, extra in GEOMETRIES.items():
        for i in range(per_geo):
            px = pixels[(i + len(out)) % len(pixels)] if not quick else (20.0, 40.0)[i % 2]
            out.append(dict(name=f"{g}-{i}", geometry=g, seed=int(rng.integers(1 << 30)),
                            capture_size_um=3000.0 if quick else 6500.0,
                            tissue_radius_frac=0.36 if quick else 0.33,
                            msi_pixel_size_um=px, warp_um=float(rng.uniform(0, 50)),
                            n_landmarks=8, landmark_noise_um=10.0, **extra))
    return out


#: a registration whose median error exceeds this is "wrong" (spots paired with the wrong pixels)
WRONG_UM = 100.0


def deliberately_wrong(T: Transform, tissue_xy: np.ndarray) -> dict[str, Transform]:
    """The found transform rotated by 180°, mirrored (about the tissue centre) and shifted by
    300 µm: registrations the QC flag must catch."""
    w = wrong_placements(T, T(tissue_xy).mean(0), 300.0)
    return {k: w[k] for k in ("rotate 180", "mirror", "shift +x")}


def tre(T, sim, msi) -> dict:
    return truth_error_table(T, sim["msi_pixels"], msi.obs, sim["params"].msi_pixel_size_um)


def run_case(c: dict) -> list[dict]:
    kw = {k: v for k, v in c.items() if k not in ("name", "geometry", "seed")}
    p = DemoParams(seed=c["seed"], n_genes=300, n_metabolites=60, n_links=12, **kw)
    sim = simulate_sample(p)
    st, msi = simulated_sections(sim)
    lm = sim["landmarks"]
    rows = []
    base = dict(case=c["name"], geometry=c["geometry"], pixel_um=p.msi_pixel_size_um,
                warp_um=round(p.warp_um, 1), msi_pixels=msi.n_obs, spots=st.n_obs)

    def timed(fn):
        t0 = time.process_time()
        out = fn()
        return out, time.process_time() - t0

    inps = {}
    for method, params, landmarks in (
        ("spatialfuse", {}, None),
        ("spatialfuse-affine", {"nonrigid": False}, None),
        ("spatialfuse+landmarks", {}, lm),
    ):
        def reg():
            inp = prepare_inputs(st, msi, DEFAULTS["feature_components"], 0)
            inps[method] = inp
            return register(inp, params, landmarks=landmarks, sample=c["name"])

        (T, _), cpu = timed(reg)
        if method == "spatialfuse":
            T_auto = T
        rows.append(dict(base, method=method, cpu_s=cpu, **tre(T, sim, msi)))
    (T, d), cpu = timed(lambda: register_landmarks(lm[["st_x_um", "st_y_um"]].to_numpy(),
                                                    lm[["msi_x_um", "msi_y_um"]].to_numpy()))
    rows.append(dict(base, method="landmark-affine", cpu_s=cpu, **tre(T, sim, msi),
                     landmark_loo_um=d["landmark_loo_error_um_median"]))
    # the ceiling of any affine: least squares on the per-pixel truth (tissue pixels)
    t = sim["msi_pixels"][sim["msi_pixels"]["tissue_fraction"] >= 0.5]
    A = fit_affine(t[["msi_x_um", "msi_y_um"]].to_numpy(), t[["st_x_um", "st_y_um"]].to_numpy())
    rows.append(dict(base, method="best-affine (truth fit)", cpu_s=0.0,
                     **tre(Transform(A, meta={"method": "truth_affine"}), sim, msi)))
    out, cpu = timed(lambda: run_align(st, msi, {}, sample=c["name"]))
    rows[0]["align_cpu_s"] = cpu
    rows[0]["flagged"] = out["qc"]["flagged"]
    rows[0]["similarity"] = out["qc"].get("feature_similarity")
    rows[0]["placement_margin"] = out["qc"].get("placement_margin")
    rows[0]["dice"] = out["qc"].get("tissue_dice")
    inp = inps["spatialfuse"]
    wrong = deliberately_wrong(T_auto, inp.raster.tissue_xy)
    rows[0]["wrong_flagged"] = sum(assess_registration(inp, W, {})["flagged"] for W in wrong.values())
    rows[0]["wrong_tried"] = len(wrong)
    return rows


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 mm capture area, 8 cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the per-case table (TSV) here")
    ap.add_argument("--only", default=None, help="run only cases whose name starts with this")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = []
    for c in cases(args.quick, args.seed):
        if args.only and not c["name"].startswith(args.only):
            continue
        t0 = time.perf_counter()
        r = run_case(c)
        rows += r
        print(f"{c['name']:>11}  px {c['msi_pixel_size_um']:>4.0f} um  warp {c['warp_um']:4.1f} um  "
              + "  ".join(f"{x['method']}: {x['truth_error_um_median']:6.1f} um" for x in r)
              + f"  ({time.perf_counter() - t0:.0f}s wall)", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, sep="\t", index=False)
    df["tre_px"] = df["truth_error_um_median"] / df["pixel_um"]
    summary = df.groupby(["geometry", "method"], sort=False).agg(
        n=("case", "size"), median_tre_um=("truth_error_um_median", "median"),
        p90_tre_um=("truth_error_um_p90", "median"), median_tre_px=("tre_px", "median"),
        worst_median_tre_um=("truth_error_um_median", "max"), cpu_s=("cpu_s", "median"))
    overall = df.groupby("method", sort=False).agg(
        n=("case", "size"), median_tre_um=("truth_error_um_median", "median"),
        p90_tre_um=("truth_error_um_p90", "median"), median_tre_px=("tre_px", "median"),
        worst_median_tre_um=("truth_error_um_median", "max"), cpu_s=("cpu_s", "median"))
    pd.set_option("display.width", 160)
    print("\nPer geometry (median over cases of each case's median / p90 TRE):")
    print(summary.round(2).to_string())
    print("\nAll cases:")
    print(overall.round(2).to_string())
    sf = df[df["method"] == "spatialfuse"]
    print(f"\nspatialfuse: median TRE <= 1/2 pixel in {(sf['tre_px'] <= 0.5).sum()}/{len(sf)} cases; "
          f"full align stage CPU median {sf['align_cpu_s'].median():.1f}s, max {sf['align_cpu_s'].max():.1f}s "
          f"(registration max {sf['cpu_s'].max():.1f}s); flagged {int(sf['flagged'].sum())}/{len(sf)}")
    bad = sf["truth_error_um_median"] > WRONG_UM
    fl = sf["flagged"].astype(bool)
    print(f"flag vs truth (wrong = median TRE > {WRONG_UM:.0f} um): {int((fl & bad).sum())}/{int(bad.sum())} "
          f"wrong registrations flagged (misses {int((~fl & bad).sum())}), false alarms "
          f"{int((fl & ~bad).sum())}/{int((~bad).sum())} correct ones; deliberately wrong placements "
          f"(rot 180, mirror, 300 um shift of each found transform) flagged "
          f"{int(sf['wrong_flagged'].sum())}/{int(sf['wrong_tried'].sum())}")
    if fl.any():
        print("flagged cases:", ", ".join(f"{r.case} ({r.truth_error_um_median:.0f} um, similarity "
                                          f"{r.similarity:.2f}, placement margin {r.placement_margin:+.2f}, Dice {r.dice:.2f})"
                                          for r in sf[fl].itertuples()))
    big = sf[sf["pixel_um"] == 10.0]
    if len(big):
        print(f"10 um pixels ({int(big['msi_pixels'].median())} pixels): align CPU "
              f"{big['align_cpu_s'].median():.1f}s median")
    return df


if __name__ == "__main__":
    main()
