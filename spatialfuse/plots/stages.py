"""One figure function per stage (ingest QC, alignment overlay, imputation, domains, associations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from . import _frame, placeholder, plot_labels, plot_values, plt, savefig


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def ingest_qc_figure(st, msi, path, sample: str) -> None:
    """TIC image + tissue mask, mean spectrum with annotated peaks, ST counts and genes maps."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 9))
    xy = msi.obsm[Key.obsm.spatial]
    px = msi.uns[Key.uns.spatialfuse]["pixel_size_um"]
    plot_values(axes[0, 0], xy, np.log10(msi.obs[Key.obs.tic].to_numpy() + 1),
                f"{sample}: MSI total ion current (own frame)", diameter_um=px * 1.1,
                marker="s", label="log10 TIC")
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    if (~on).any():
        axes[0, 0].tricontour(xy[:, 0], xy[:, 1], on.astype(float), levels=[0.5], colors="w",
                              linewidths=0.8)
    ax = axes[0, 1]
    raw = msi.layers.get(Key.layers.intensity, msi.X)
    mean = np.asarray(raw[on].mean(0)).ravel()
    mz = msi.var[Key.var.mz].to_numpy()
    ax.vlines(mz, 0, mean, color="#0072B2", lw=0.8)
    if Key.var.annotation in msi.var:
        ann = msi.var[Key.var.annotation].to_numpy()
        top = np.argsort(-mean)[:8]
        for i in top:
            if ann[i]:
                lab = ann[i].split(";")[0] + (f" (+{ann[i].count(';')})" if ";" in ann[i] else "")
                ax.annotate(lab, (mz[i], mean[i]), fontsize=6, rotation=60, ha="left", va="bottom")
    ax.set_xlabel("m/z")
    ax.set_ylabel("mean intensity on tissue (counts)")
    ax.set_title("mean spectrum (annotated peaks: first candidate, +n others)", fontsize=10)
    sxy = st.obsm[Key.obsm.spatial]
    plot_values(axes[1, 0], sxy, np.log10(st.obs[Key.obs.total_counts].to_numpy() + 1),
                "ST: UMI counts per spot", label="log10 counts")
    plot_values(axes[1, 1], sxy, st.obs[Key.obs.n_genes].to_numpy(), "ST: genes per spot",
                label="genes detected")
    fig.tight_layout()
    savefig(fig, path)


def alignment_overlay_figure(st, msi_aligned, coverage: pd.DataFrame, qc: dict, path,
                             sample: str) -> None:
    """ST spots with MSI tissue pixels mapped into the ST frame, and per-spot coverage."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    ax = axes[0]
    xy = msi_aligned.obsm[Key.obsm.spatial]
    on = msi_aligned.obs[Key.obs.on_tissue].to_numpy(bool)
    ax.scatter(xy[on, 0], xy[on, 1], s=2, c="#D55E00", alpha=0.35, linewidths=0,
               label="MSI tissue pixels (aligned)")
    sxy = st.obsm[Key.obsm.spatial]
    ax.scatter(sxy[:, 0], sxy[:, 1], s=6, facecolors="none", edgecolors="#0072B2", linewidths=0.5,
               label="ST spots")
    _frame(ax, f"{sample}: registration overlay — Dice {qc.get('tissue_dice', float('nan')):.2f}"
           + (f", truth error {qc['truth_error_um_median']:.1f} µm" if "truth_error_um_median" in qc
              else ""))
    ax.legend(fontsize=7, loc="upper right", markerscale=3)
    cov = coverage.loc[st.obs_names, Key.obs.coverage].to_numpy()
    plot_values(axes[1], sxy, np.clip(cov, 0, 1), "fraction of each spot covered by MSI",
                cmap="magma", label="coverage")
    fig.tight_layout()
    savefig(fig, path)


def impute_figure(msi, table: pd.DataFrame, path, sample: str,
                  method: str = "ridge_from_rna") -> None:
    """Measured vs cross-modally predicted (held-out) ion images for the best, median and worst
    metabolites of ``method``, a measured-vs-predicted scatter per metabolite, and the held-out
    Pearson r of every method in both directions."""
    sub = table[(table["modality"] == "msi") & (table["method"] == method)]
    sub = sub.dropna(subset=["pearson_r"])
    sub = sub.sort_values("pearson_r", ascending=False)
    if sub.empty or Key.layers.imputed(method) not in msi.layers:
        placeholder(path, f"{sample}: no held-out scores for {method}")
        return
    picks = [sub.iloc[0], sub.iloc[len(sub) // 2], sub.iloc[-1]]
    xy = msi.obsm[Key.obsm.spatial]
    fig, axes = plt.subplots(3, 4, figsize=(17, 12), gridspec_kw={"width_ratios": [1, 1, 1, 1.15]})
    layer = msi.layers[Key.layers.imputed(method)]
    label = method.replace("_from_rna", "")
    for j, (row, tag) in enumerate(zip(picks, ("best", "median", "worst"))):
        f = list(msi.var_names).index(row["feature"])
        meas = _dense(msi.X[:, f]).ravel()
        pred = np.asarray(layer[:, f]).ravel()
        ann = msi.var[Key.var.annotation].iloc[f] if Key.var.annotation in msi.var else ""
        name = f"{row['feature']}" + (f"\n{ann.split(';')[0]}" if ann else "")
        plot_values(axes[0, j], xy, meas, f"{tag}: {name}\nmeasured", label="log intensity")
        ssim = f", SSIM {row['ssim']:.2f}" if "ssim" in row and pd.notna(row["ssim"]) else ""
        plot_values(axes[1, j], xy, pred,
                    f"{label} from genes, held out\nr = {row['pearson_r']:.2f}{ssim}",
                    label="predicted")
        ok = np.isfinite(pred)
        axes[2, j].scatter(meas[ok], pred[ok], s=5, alpha=0.5, color="#0072B2", linewidths=0)
        axes[2, j].set_xlabel("measured (log intensity)")
        axes[2, j].set_ylabel("predicted, held out")
        axes[2, j].set_title(f"{tag}: spots of every held-out block", fontsize=9)
    ax = axes[0, 3]
    cross = table[table["method"].str.contains("_from_")]
    groups = [(m, g["pearson_r"].dropna().to_numpy())
              for m, g in cross.groupby("method", sort=True)]
    groups = [(m, v) for m, v in groups if len(v)]
    if groups:
        ax.boxplot([v for _, v in groups], vert=False, showfliers=False)
        ax.set_yticks(np.arange(1, len(groups) + 1),
                      [m.replace("_from_rna", ": genes → metabolites")
                       .replace("_from_msi", ": metabolites → genes") for m, _ in groups],
                      fontsize=8)
        ax.axvline(0, color="#BBBBBB", lw=0.8)
        ax.set_xlabel("held-out Pearson r per feature")
        ax.set_title("all methods, blocked CV", fontsize=9)
    den = table[table["task"] == "denoise"] if "task" in table else table.iloc[:0]
    ax = axes[1, 3]
    groups = [(f"{mo}: {m}", g["pearson_r"].dropna().to_numpy())
              for (mo, m), g in den.groupby(["modality", "method"], sort=True)]
    groups = [(m, v) for m, v in groups if len(v)]
    if groups:
        ax.boxplot([v for _, v in groups], vert=False, showfliers=False)
        ax.set_yticks(np.arange(1, len(groups) + 1), [m for m, _ in groups], fontsize=8)
        ax.set_xlabel("held-out-spot Pearson r per feature")
        ax.set_title("denoising (hidden spots)", fontsize=9)
    axes[2, 3].axis("off")
    fig.suptitle(f"{sample}: cross-modal prediction and denoising, scored on held-out data")
    fig.tight_layout()
    savefig(fig, path)


def domains_figure(xy: np.ndarray, labels: dict[str, np.ndarray], path, sample: str,
                   truth: np.ndarray | None = None, scores: dict | None = None) -> None:
    panels = ([("truth", truth)] if truth is not None else []) + list(labels.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (name, lab) in zip(axes[0], panels):
        t = f"{sample}: {name}"
        if scores and name in scores and "ari" in scores[name]:
            t += f" (ARI {scores[name]['ari']:.2f})"
        plot_labels(ax, xy, lab, t, legend=ax is axes[0, -1])
    fig.tight_layout()
    savefig(fig, path)


def association_heatmap(assoc: pd.DataFrame, path, top: int = 25, value: str = "r",
                        fdr: float = 0.05) -> None:
    """Heatmap of the strongest metabolite–gene associations: rows metabolites (first
    annotation candidate and m/z), columns genes, colour ``value``; a dot marks q ≤ ``fdr``."""
    if assoc.empty:
        placeholder(path, "No metabolite–gene association was tested.")
        return
    best = assoc.nsmallest(top * 3, "pval")
    mets = list(dict.fromkeys(best["metabolite_feature"]))[:top]
    genes = list(dict.fromkeys(best["gene"]))[:top]
    sub = assoc[assoc["metabolite_feature"].isin(mets) & assoc["gene"].isin(genes)]
    M = sub.pivot_table(index="metabolite_feature", columns="gene", values=value).reindex(
        index=mets, columns=genes)
    labels = []
    for f in mets:
        row = sub[sub["metabolite_feature"] == f].iloc[0]
        name = str(row.get("annotation") or "").split(";")[0].rsplit(" [", 1)[0]
        mz = row.get("mz")
        mz_txt = f"m/z {float(mz):.4f}" if pd.notna(mz) else str(f)
        labels.append(f"{name[:32]} ({mz_txt})" if name else mz_txt)
    fig, ax = plt.subplots(figsize=(0.32 * len(genes) + 4.2, 0.28 * len(mets) + 2))
    lim = np.nanmax(np.abs(M.to_numpy())) if M.size else 1
    im = ax.imshow(M.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    if "qval" in sub:
        Q = sub.pivot_table(index="metabolite_feature", columns="gene", values="qval").reindex(
            index=mets, columns=genes).to_numpy()
        yy, xx = np.nonzero(Q <= fdr)
        ax.scatter(xx, yy, s=5, c="k")
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(mets)), labels, fontsize=7)
    ax.set_xlabel("gene")
    ax.set_ylabel("metabolite (first annotation candidate)")
    ax.spines[:].set_visible(False)
    ax.set_title(f"strongest associations (dot: q ≤ {fdr:g})", fontsize=9)
    fig.colorbar(im, ax=ax, label="Pearson r across spots" if value == "r" else value,
                 fraction=0.04, pad=0.02)
    fig.tight_layout()
    savefig(fig, path)
