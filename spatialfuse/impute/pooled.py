"""The impute stage's paired comparisons pooled over samples.

One section's verdict rests on its own features only: 60 ions cannot tell a lead of 0.03 from
their spread. A study has several sections, and its question is whether a method leads *across*
them. :func:`pooled_verdicts` takes each sample's chosen pair from its ``metrics.json`` (the best
model-based method or decoder against the best baseline, or each kind's best method against the
stronger location reference it was set against) and compares the two on all samples' features at once: the difference of
the pooled medians, with the bootstrap interval of :func:`.scores.paired_median_difference`
resampling each sample's clusters of co-varying features within that sample (samples as
strata). The report's cohort table and ``benchmarks/impute_benchmark.py`` both use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .crossmodal import score_column
from .scores import paired_median_difference

#: The comparisons of ``metrics.json`` pooled here, in the order they are reported
#: (``_spatial`` is left out: the spatial subset is not in ``feature_scores.tsv``).
COMPARISONS = ("model_vs_baselines", "decoder_vs_baselines", "model_vs_location",
               "decoder_vs_location", "baseline_vs_location")
SCORES = (("", "pooled", "pearson_r"), ("_block", "within blocks", "pearson_r_block"))


def _counts(names: list[str]) -> str:
    """``vae (2), gnn`` — each name once, with how many samples chose it when more than one."""
    s = pd.Series(names).value_counts(sort=False)
    return ", ".join(f"{n} ({c})" if c > 1 else n for n, c in s.items())


def pooled_verdicts(metrics: dict[str, dict], scores: dict[str, pd.DataFrame],
                    seed: int = 0) -> pd.DataFrame:
    """Per task × comparison × score, each sample's chosen pair pooled over the samples.

    ``metrics``: sample → its impute ``metrics.json``; ``scores``: sample → its
    ``feature_scores.tsv`` (a ``cluster`` column, the stage's clusters of co-varying features,
    is used when present; without it each feature is its own cluster). Samples without the
    comparison, or without either method's scores, are left out of that row. Returns one row
    per task, comparison and score with the samples pooled, the methods and comparators they
    chose, the samples' own verdicts (e.g. ``tie (3), better``), both pooled medians, the
    difference with its 95 % interval and the verdict."""
    rows = []
    for task in dict.fromkeys(t for m in metrics.values() for t in (m.get("crossmodal") or {})):
        src = task.split("_to_")[0]
        for comp in COMPARISONS:
            for suffix, label, col in SCORES:
                a, b, strata, clusters, who, vs, own = [], [], [], [], [], [], []
                for i, (s, m) in enumerate(metrics.items()):
                    v = ((m.get("crossmodal") or {}).get(task) or {}).get(comp + suffix)
                    sc = scores.get(s)
                    if not isinstance(v, dict) or sc is None or col not in sc:
                        continue
                    ref = v.get("baseline", v.get("reference"))
                    t = sc[sc["task"] == task]
                    wide = t.pivot_table(index="feature", columns="method", values=col,
                                         aggfunc="first", dropna=False)
                    x, y = score_column(v["method"], src), score_column(ref, src)
                    if x not in wide or y not in wide:
                        continue
                    a.append(wide[x].to_numpy(float))
                    b.append(wide[y].to_numpy(float))
                    strata.append(np.full(len(wide), i))
                    c = (t.groupby("feature")["cluster"].first().reindex(wide.index)
                         .to_numpy(float) if "cluster" in t else np.full(len(wide), np.nan))
                    miss = ~np.isfinite(c)  # no cluster known: the feature is its own
                    c[miss] = -1 - np.arange(miss.sum())
                    clusters.append(c.astype(int))
                    who.append(v["method"])
                    vs.append(ref)
                    own.append(str(v.get("verdict", "n/a")))
                if not a:
                    continue
                A, B = np.concatenate(a), np.concatenate(b)
                v = paired_median_difference(A, B, seed=seed, strata=np.concatenate(strata),
                                             clusters=np.concatenate(clusters))
                ok = np.isfinite(A) & np.isfinite(B)
                rows.append({"task": task, "comparison": comp, "score": label,
                             "samples": len(a), "method": _counts(who),
                             "comparator": _counts(vs),
                             # each sample's own verdict: how many agree, apart from the pool
                             "sample_verdicts": _counts(own),
                             "median_method": float(np.median(A[ok])) if ok.any() else np.nan,
                             "median_comparator": float(np.median(B[ok])) if ok.any() else np.nan,
                             **{k: v[k] for k in ("difference", "ci95_low", "ci95_high",
                                                  "verdict", "n_features")},
                             "n_clusters": v.get("n_clusters", 0)})
    cols = ["task", "comparison", "score", "samples", "method", "comparator", "sample_verdicts",
            "median_method",
            "median_comparator", "difference", "ci95_low", "ci95_high", "verdict", "n_features",
            "n_clusters"]
    return pd.DataFrame(rows, columns=cols)
