"""Stage 7: gather per-sample metrics into one long table and draw cohort figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..constants import Key
from ..plots import plot_labels, plt, savefig


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (bool, np.bool_)):
            out[key] = float(v)
        elif isinstance(v, (int, float, np.integer, np.floating)) and v is not None:
            out[key] = float(v)
    return out


_SAMPLE_RE = re.compile(r"results/([^/]+)/")


def collect_metrics(files: dict[str, list[str]]) -> pd.DataFrame:
    """Long table (sample, stage, model, metric, value) from the per-stage JSON files.

    ``files``: stage name → JSON paths under ``results/{sample}/...``; for model and domain
    files the model name is read from the path.
    """
    rows = []
    for stage, paths in files.items():
        for p in paths:
            sample = _SAMPLE_RE.search(str(p)).group(1)
            model = ""
            m = re.search(r"/model/([^/]+)/", str(p)) or re.search(r"/domains/([^/]+)_metrics", str(p))
            if m:
                model = m.group(1)
            for k, v in _flatten(json.loads(Path(p).read_text())).items():
                rows.append((sample, stage, model, k, v))
    return pd.DataFrame(rows, columns=["sample", "stage", "model", "metric", "value"])


def domains_grid(samples: list[str], models: list[str], truth: dict[str, str | None],
                 path: str | Path, metrics: pd.DataFrame) -> None:
    """Rows: samples; columns: truth (when known) then each model's domains."""
    has_truth = any(truth.get(s) for s in samples)
    ncol = len(models) + int(has_truth)
    fig, axes = plt.subplots(len(samples), ncol, figsize=(4.3 * ncol, 4.0 * len(samples)),
                             squeeze=False)
    for i, s in enumerate(samples):
        col = 0
        emb = ad.read_h5ad(f"results/{s}/model/{models[0]}/embedding.h5ad")
        xy = emb.obsm[Key.obsm.spatial]
        if has_truth:
            ax = axes[i, col]
            t = truth.get(s)
            if t and (Path(t) / "spots.tsv").exists():
                tt = pd.read_csv(Path(t) / "spots.tsv", sep="\t", index_col=0)
                plot_labels(ax, xy, tt.loc[emb.obs_names, "domain"].to_numpy(), f"{s}: truth",
                            legend=False)
            else:
                ax.axis("off")
            col += 1
        for m in models:
            lab = pd.read_csv(f"results/{s}/domains/{m}.tsv", sep="\t", index_col=0)["domain"]
            ari = metrics.query("sample == @s and stage == 'domains' and model == @m and metric == 'ari'")
            title = f"{s}: {m}" + (f" (ARI {ari['value'].iloc[0]:.2f})" if len(ari) else "")
            plot_labels(axes[i, col], xy, lab.loc[emb.obs_names].to_numpy(), title,
                        legend=col == ncol - 1)
            col += 1
    fig.tight_layout()
    savefig(fig, path)


def metrics_figure(metrics: pd.DataFrame, path: str | Path) -> None:
    """Registration error (or Dice), domain ARI per model, held-out imputation r per sample."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    samples = sorted(metrics["sample"].unique())
    x = np.arange(len(samples))
    reg = metrics.query("stage == 'align'")
    err = reg[reg["metric"] == "truth_error_um_median"].set_index("sample")["value"]
    ax = axes[0]
    if len(err):
        ax.bar(x, [err.get(s, np.nan) for s in samples], color="#0072B2")
        ax.set_ylabel("median registration error (µm)")
        ax.set_title("registration error vs truth")
    else:
        dice = reg[reg["metric"] == "tissue_dice"].set_index("sample")["value"]
        ax.bar(x, [dice.get(s, np.nan) for s in samples], color="#0072B2")
        ax.set_ylabel("tissue Dice")
        ax.set_title("registration overlap")
    ax.set_xticks(x, samples, rotation=45, ha="right")
    ax = axes[1]
    dm = metrics.query("stage == 'domains' and metric == 'ari'")
    models = sorted(dm["model"].unique())
    w = 0.8 / max(len(models), 1)
    from ..plots import PALETTE

    for j, m in enumerate(models):
        v = dm[dm["model"] == m].set_index("sample")["value"]
        ax.bar(x + j * w, [v.get(s, np.nan) for s in samples], w, label=m, color=PALETTE[j])
    ax.set_xticks(x + w * (len(models) - 1) / 2, samples, rotation=45, ha="right")
    ax.set_ylabel("ARI vs truth")
    ax.set_ylim(0, 1)
    ax.set_title("domain recovery")
    if models:
        ax.legend(fontsize=8)
    ax = axes[2]
    imp = metrics.query("stage == 'impute' and metric.str.endswith('median_pearson')", engine="python")
    keys = sorted(imp["metric"].unique())
    w = 0.8 / max(len(keys), 1)
    for j, k in enumerate(keys):
        v = imp[imp["metric"] == k].set_index("sample")["value"]
        ax.bar(x + j * w, [v.get(s, np.nan) for s in samples], w, label=k.replace(".median_pearson", ""),
               color=PALETTE[j % len(PALETTE)])
    ax.set_xticks(x + w * (len(keys) - 1) / 2, samples, rotation=45, ha="right")
    ax.set_ylabel("median held-out Pearson r")
    ax.set_title("imputation / prediction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    savefig(fig, path)
