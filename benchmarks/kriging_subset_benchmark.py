"""Which training spots the kriging reference is fitted on, at Visium HD sizes.

Beyond ``KRIGE_MAX_TRAIN`` training spots a fold's kriging (``spatialfuse.impute.cv``) is
fitted on a subset. This compares, on the synthetic section of
``impute_scale_benchmark.py`` (``--side``² bins of 16 µm, 200 m/z and ``--genes`` genes on
four shared smooth fields), the stage's blocks and buffer, and the seed 0:

* ``uniform:N`` — a seeded uniform draw of N training spots (the rule until 2026-12-05);
* ``subset:N`` — :func:`spatialfuse.impute.cv.krige_subset` with ``max_train`` N (the N/2
  nearest the block, a seeded random N/2 of the rest: the rule now);
* ``all`` — every training spot (exact; its cost grows with the cube of the spots: keep
  ``--side`` ≤ ~75).

Prints, per variant, the CPU seconds of the five folds' kriging and the median over the
features of the held-out r, pooled and within blocks, for the ions and the genes.

    python benchmarks/kriging_subset_benchmark.py --side 71 --variants uniform:1500 subset:1500 all
    python benchmarks/kriging_subset_benchmark.py --side 141 --variants uniform:1500 subset:1500 subset:3000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from impute_scale_benchmark import synthetic_section  # noqa: E402
from spatialfuse.constants import Key  # noqa: E402
from spatialfuse.impute.cv import krige, krige_subset  # noqa: E402
from spatialfuse.impute.scores import feature_scores, spot_pitch_um  # noqa: E402
from spatialfuse.impute.stage import DEFAULTS, cv_folds  # noqa: E402


def training_subset(variant: str, xy: np.ndarray, train: np.ndarray, test: np.ndarray,
                    seed: int) -> np.ndarray:
    """Indices of the training spots one fold's kriging is fitted on, under ``variant``."""
    idx = np.flatnonzero(train)
    kind, _, cap = variant.partition(":")
    if kind == "all":
        return idx
    cap = int(cap)
    if kind == "uniform":
        if idx.size <= cap:
            return idx
        return np.sort(np.random.default_rng([seed, 29]).choice(idx, cap, replace=False))
    if kind == "subset":
        return idx[krige_subset(xy[idx], xy[test], cap, seed)]
    raise SystemExit(f"unknown variant {variant!r}: uniform:N, subset:N or all")


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=71, help="bins per side (spots = side²)")
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--variants", nargs="+", default=["uniform:1500", "subset:1500"])
    args = ap.parse_args(argv)
    rna, msi = synthetic_section(args.side, args.genes, 200, 16.0)
    xy = np.asarray(rna.obsm[Key.obsm.spatial], float)
    Ys = {"msi": np.asarray(msi.X, float), "rna": rna.X.toarray().astype(float)}
    folds, masks, _ = cv_folds(xy, DEFAULTS, 0)
    pitch = spot_pitch_um(xy)
    rows = []
    for variant in args.variants:
        out = {k: np.full(Y.shape, np.nan) for k, Y in Ys.items()}
        t0 = time.process_time()
        for f, train in sorted(masks.items()):
            test = folds == f
            idx = training_subset(variant, xy, np.asarray(train, bool), test, int(f))
            preds = krige(xy[idx], [Y[idx] for Y in Ys.values()], xy[test], pitch)
            for o, (pred, _) in zip(out.values(), preds):
                o[test] = pred
        row = {"spots": len(xy), "variant": variant, "cpu_s": round(time.process_time() - t0, 1)}
        for k, Y in Ys.items():
            sc = feature_scores(out[k], Y, xy, blocks=folds)
            row[f"{k}_pooled_r"] = round(float(np.nanmedian(sc["pearson_r"])), 3)
            row[f"{k}_block_r"] = round(float(np.nanmedian(sc["pearson_r_block"])), 3)
        print("\t".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
