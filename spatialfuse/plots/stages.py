"""One figure function per stage (ingest QC, alignment overlay, imputation, domains, associations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import VISIUM_SPOT_DIAMETER_UM, Key
from ..pixels import pixel_xy
from . import (
    _frame,
    add_spots,
    aligned_pixel_corners,
    frame_limits,
    overlay_panel,
    placeholder,
    plot_values,
    plt,
    savefig,
    spot_geometry,
)


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _raster(msi, values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Per-pixel values as an image on the imzML grid (NaN where no spectrum), and its extent
    in µm of the MSI's own frame."""
    x, y = msi.obs[Key.obs.x].to_numpy(int), msi.obs[Key.obs.y].to_numpy(int)
    img = np.full((y.max() - y.min() + 1, x.max() - x.min() + 1), np.nan)
    img[y - y.min(), x - x.min()] = values
    px, py = pixel_xy(msi.uns[Key.uns.spatialfuse])
    return img, [(x.min() - 0.5) * px, (x.max() + 0.5) * px, (y.max() + 0.5) * py,
                 (y.min() - 0.5) * py]


def ingest_qc_figure(st, msi, path, sample: str, qc: dict | None = None) -> None:
    """TIC image + tissue mask, mean spectrum with annotated peaks, ST counts and genes maps;
    the before/after numbers of ``qc`` (ingest's qc.json) in the panel titles."""
    qm, qs = (qc or {}).get("msi", {}), (qc or {}).get("st", {})
    fig, axes = plt.subplots(2, 2, figsize=(11, 9))
    ax = axes[0, 0]
    img, extent = _raster(msi, np.log10(msi.obs[Key.obs.tic].to_numpy() + 1))
    im = ax.imshow(img, extent=extent, cmap="viridis", interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label("log10 TIC", fontsize=8)
    on = msi.obs[Key.obs.on_tissue].to_numpy(bool)
    if (~on).any() and on.any():
        mask, _ = _raster(msi, on.astype(float))
        px, py = pixel_xy(msi.uns[Key.uns.spatialfuse])
        cx = extent[0] + px * (0.5 + np.arange(mask.shape[1]))
        cy = extent[3] + py * (0.5 + np.arange(mask.shape[0]))  # pixel centres, rows = y
        ax.contour(cx, cy, np.nan_to_num(mask), levels=[0.5], colors="w", linewidths=0.8)
    title = f"{sample}: MSI total ion current (own frame)"
    if qm:
        title += f"\n{qm.get('pixels', msi.n_obs):,} pixels, {qm.get('pixels_on_tissue', 0):,} " \
                 "on tissue (white outline)"
    _frame(ax, title)
    ax = axes[0, 1]
    raw = msi.layers.get(Key.layers.intensity, msi.X)
    w = on.astype(np.float32) / max(int(on.sum()), 1)
    mean = np.asarray(raw.T @ w).ravel()  # mean on-tissue spectrum, without copying rows
    mz = msi.var[Key.var.mz].to_numpy()
    matrix = msi.var[Key.var.matrix_peak].to_numpy(bool) if Key.var.matrix_peak in msi.var \
        else np.zeros(msi.n_vars, bool)
    ax.vlines(mz[~matrix], 0, mean[~matrix], color="#0072B2", lw=0.8)
    if matrix.any():
        ax.vlines(mz[matrix], 0, mean[matrix], color="#D55E00", lw=0.8,
                  label="flagged matrix/off-tissue peaks (kept)")
        ax.legend(fontsize=7, loc="upper right")
    if Key.var.annotation in msi.var:
        ann = msi.var[Key.var.annotation].to_numpy()
        labelled = [i for i in np.argsort(-mean) if ann[i]][:8]
        for i in labelled:
            lab = ann[i].split(";")[0] + (f" (+{ann[i].count(';')})" if ";" in ann[i] else "")
            ax.annotate(lab, (mz[i], mean[i]), fontsize=6, rotation=60, ha="left", va="bottom")
    ax.set_xlabel("m/z")
    ax.set_ylabel("mean intensity on tissue (counts)")
    if mean.size and mean.max() > 0:
        ax.set_ylim(0, mean.max() * 1.5)  # room for the rotated labels
    title = "mean on-tissue spectrum (labels: first candidate, +n others)"
    if qm:
        title += (f"\npeaks {qm.get('peaks_input', '?'):,} read → {qm.get('peaks_after', '?'):,} "
                  f"kept ({qm.get('matrix_peaks', 0)} matrix, {qm.get('rare_peaks', 0)} rare); "
                  f"{qm.get('peaks_annotated', 0)} annotated, {qm.get('peaks_ambiguous', 0)} "
                  "with several candidates")
    ax.set_title(title, fontsize=9)
    sxy = st.obsm[Key.obsm.spatial]
    diam, square = spot_geometry(st.uns.get(Key.uns.spatialfuse))
    marker = "s" if square else "o"
    title = "ST: UMI counts per spot"
    if qs:
        title += (f"\n{qs.get('spots_input', '?'):,} spots read → {qs.get('spots_in_tissue', '?'):,}"
                  f" in tissue → {qs.get('spots_after_qc', '?'):,} kept")
    plot_values(axes[1, 0], sxy, np.log10(st.obs[Key.obs.total_counts].to_numpy() + 1), title,
                diameter_um=diam, label="log10 counts", marker=marker)
    title = "ST: genes per spot"
    if qs:
        title += (f"\n{qs.get('genes_input', '?'):,} genes read → {qs.get('genes_after_qc', '?'):,}"
                  f" kept, {qs.get('highly_variable_genes', '?'):,} highly variable")
    plot_values(axes[1, 1], sxy, st.obs[Key.obs.n_genes].to_numpy(), title, diameter_um=diam,
                label="genes detected", marker=marker)
    fig.tight_layout()
    savefig(fig, path)


def alignment_overlay_figure(st, msi_aligned, coverage: pd.DataFrame, qc: dict, path,
                             sample: str, max_pixels: int = 200_000, seed: int = 0) -> None:
    """ST spots with MSI tissue pixels mapped into the ST frame, and per-spot coverage, both at
    their true size and shape (each MSI pixel as the registration maps its rectangle, see
    :func:`~spatialfuse.plots.aligned_pixel_corners`; the ST spot diameter); more than
    ``max_pixels`` tissue pixels are drawn as a seeded random subset."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    ax = axes[0]
    xy = np.asarray(msi_aligned.obsm[Key.obsm.spatial])[:, :2]
    on = msi_aligned.obs[Key.obs.on_tissue].to_numpy(bool)
    mxy = xy[on]
    native = msi_aligned.obsm.get(Key.obsm.spatial_native)
    corners = aligned_pixel_corners(qc, None if native is None else np.asarray(native)[on], mxy)
    if len(mxy) > max_pixels:
        mxy = mxy[np.random.default_rng(seed).choice(len(mxy), max_pixels, replace=False)]
    sxy = np.asarray(st.obsm[Key.obsm.spatial])[:, :2]
    spot_um = float(qc.get("spot_diameter_um", VISIUM_SPOT_DIAMETER_UM))  # the align stage's qc has both sizes
    bins = spot_geometry(st.uns.get(Key.uns.spatialfuse))[1]  # Visium HD
    noun, marker = ("bin", "s") if bins else ("spot", "o")
    overlay_panel(ax, sxy, mxy, corners, spot_um, square_spots=bins)
    _frame(ax, f"{sample}: registration overlay — Dice {qc.get('tissue_dice', float('nan')):.2f}"
           + (f", truth error {qc['truth_error_um_median']:.1f} µm" if "truth_error_um_median" in qc
              else ""))
    cov = coverage.loc[st.obs_names, Key.obs.coverage].to_numpy()
    sc = plot_values(axes[1], sxy, np.clip(cov, 0, 1), f"fraction of each {noun}"
                     + (f" ({spot_um:g} µm)" if bins else "") + " covered by MSI",
                     diameter_um=spot_um, cmap="viridis", label="coverage", marker=marker)
    sc.set_clim(0, 1)  # a fraction: the same scale on every section, full coverage or not
    fig.tight_layout()
    savefig(fig, path)


def impute_figure(msi, table: pd.DataFrame, path, sample: str,
                  method: str = "ridge_from_rna", unmeasured=None, spot_um: float = VISIUM_SPOT_DIAMETER_UM,
                  square: bool = False) -> None:
    """Measured vs cross-modally predicted (held-out) ion images for the best, median and worst
    metabolites of ``method``, a measured-vs-predicted scatter per metabolite, and the held-out
    Pearson r of every method in both directions. ``unmeasured`` (the metabolites predicted at
    the ST spots without MSI, :func:`spatialfuse.impute.predict_unmeasured`): when it has spots,
    a fourth row shows those metabolites over the whole section, measured where the MSI covers
    a spot and predicted (outlined) where it does not, on one colour scale. Spots are drawn
    at their size and shape (``spot_um``, ``square``: :func:`~spatialfuse.plots.spot_geometry`
    of the ST section)."""
    from ..impute.crossmodal import REFERENCES, reference_label

    sub = table[(table["modality"] == "msi") & (table["method"] == method)]
    sub = sub.dropna(subset=["pearson_r"])
    sub = sub.sort_values("pearson_r", ascending=False)
    if sub.empty or Key.layers.imputed(method) not in msi.layers:
        placeholder(path, f"{sample}: no held-out scores for {method}")
        return
    picks = [sub.iloc[0], sub.iloc[len(sub) // 2], sub.iloc[-1]]
    xy = msi.obsm[Key.obsm.spatial]
    extra = unmeasured is not None and unmeasured.n_obs > 0
    fig, axes = plt.subplots(3 + extra, 4, figsize=(17, 12 + 4 * extra),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.15]})
    layer = msi.layers[Key.layers.imputed(method)]
    label = method.replace("_from_rna", "")
    for j, (row, tag) in enumerate(zip(picks, ("best", "median", "worst"))):
        f = list(msi.var_names).index(row["feature"])
        meas = _dense(msi.X[:, f]).ravel()
        pred = np.asarray(layer[:, f]).ravel()
        ann = msi.var[Key.var.annotation].iloc[f] if Key.var.annotation in msi.var else ""
        name = f"{row['feature']}" + (f"\n{ann.split(';')[0]}" if ann else "")
        spots = dict(diameter_um=spot_um, marker="s" if square else "o")
        plot_values(axes[0, j], xy, meas, f"{tag}: {name}\nmeasured", label="log intensity", **spots)
        ssim = f", SSIM {row['ssim']:.2f}" if "ssim" in row and pd.notna(row["ssim"]) else ""
        plot_values(axes[1, j], xy, pred,
                    f"{label} from genes, held out\nr = {row['pearson_r']:.2f}{ssim}",
                    label="predicted", **spots)
        ok = np.isfinite(pred)
        axes[2, j].scatter(meas[ok], pred[ok], s=5, alpha=0.5, color="#0072B2", linewidths=0)
        axes[2, j].set_xlabel("measured (log intensity)")
        axes[2, j].set_ylabel("predicted, held out")
        axes[2, j].set_title(f"{tag}: spots of every held-out block", fontsize=9)
        if extra:
            _unmeasured_panel(axes[3, j], xy, meas, unmeasured, row["feature"], spot_um, square)
    if extra:
        _unmeasured_note(axes[3, 3], unmeasured)
    ax = axes[0, 3]
    cross = table[table["method"].str.contains("_from_")]
    groups = [(m.replace("_from_rna", ": genes → metabolites")
               .replace("_from_msi", ": metabolites → genes"), g["pearson_r"].dropna().to_numpy())
              for m, g in cross.groupby("method", sort=True)]
    # the blocked CV's location-only references of each direction, last (not methods)
    for mod, what in (("msi", "metabolites"), ("rna", "genes")):
        for name in REFERENCES:
            ref = table[(table["method"] == name) & (table["modality"] == mod)]
            groups.append((f"{what} by {reference_label(name)}",
                           ref["pearson_r"].dropna().to_numpy()))
    groups = [(m, v) for m, v in groups if len(v)]
    if groups:
        ax.boxplot([v for _, v in groups], orientation="horizontal", showfliers=False)
        ax.set_yticks(np.arange(1, len(groups) + 1), [m for m, _ in groups], fontsize=8)
        ax.axvline(0, color="#BBBBBB", lw=0.8)
        ax.set_xlabel("held-out Pearson r per feature")
        ax.set_title("all methods, blocked CV", fontsize=9)
    for ax, task, xlabel, title in (
            (axes[1, 3], "denoise", "held-out-spot Pearson r per feature",
             "denoising (hidden spots)"),
            (axes[2, 3], "heldout_entries", "held-out-entry Pearson r per feature",
             "imputation of hidden entries (random spot × feature)")):
        sub = table[table["task"] == task] if "task" in table else table.iloc[:0]
        groups = [(f"{mo}: {m}", g["pearson_r"].dropna().to_numpy())
                  for (mo, m), g in sub.groupby(["modality", "method"], sort=True)]
        groups = [(m, v) for m, v in groups if len(v)]
        if not groups:
            ax.axis("off")
            continue
        ax.boxplot([v for _, v in groups], orientation="horizontal", showfliers=False)
        ax.set_yticks(np.arange(1, len(groups) + 1), [m for m, _ in groups], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{sample}: cross-modal prediction and denoising, scored on held-out data")
    fig.tight_layout()
    savefig(fig, path)


def _unmeasured_panel(ax, xy, meas, unmeasured, feature, spot_um: float, square: bool) -> None:
    """One metabolite over every ST spot: measured (covered spots) and predicted from genes
    (spots without MSI, outlined), one colour scale."""
    f = list(unmeasured.var_names).index(feature)
    pred = _dense(unmeasured.X[:, f]).ravel()
    uxy = np.asarray(unmeasured.obsm[Key.obsm.spatial], float)
    vals = np.r_[meas, pred]
    lo, hi = np.nanpercentile(vals, [1, 99]) if np.isfinite(vals).any() else (0, 1)
    allxy = np.r_[xy, uxy]
    add_spots(ax, xy, spot_um, square, array=np.asarray(meas, float), cmap="viridis",
              linewidths=0, clim=(lo, hi))
    sc = add_spots(ax, uxy, spot_um, square, array=np.asarray(pred, float), cmap="viridis",
                   clim=(lo, hi), edgecolors="black", linewidths=0.7)
    frame_limits(ax, allxy)
    info = unmeasured.uns.get(Key.uns.spatialfuse, {}).get("prediction", {})
    how = "genes + kriged\nmeasured MSI" if info.get("output") == "combined" else "genes"
    _frame(ax, f"{feature}\nmeasured, or from\n{how} (outlined)")
    ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02).set_label("log intensity",
                                                                      fontsize=8)


def _unmeasured_note(ax, unmeasured) -> None:
    info = unmeasured.uns.get(Key.uns.spatialfuse, {}).get("prediction", {})
    r = unmeasured.var["heldout_pearson_r"].to_numpy(float)
    lines = [f"{unmeasured.n_obs} ST spots without MSI coverage",
             f"predicted from genes by {info.get('method')}"
             + (",\naveraged with the measured MSI around them" if info.get("output") == "combined"
                else ""),
             f"(fitted on {info.get('n_measured_spots')} measured spots)",
             f"held-out median r {info.get('heldout_pearson_median', float('nan')):.2f} "
             f"(pooled), {info.get('heldout_pearson_block_median', float('nan')):.2f} "
             "(within blocks)",
             f"metabolites with held-out r >= 0.5: {int((r >= 0.5).sum())} of {len(r)}",
             f"median distance to a measured spot: "
             f"{info.get('median_distance_to_measured_um', float('nan')):.0f} um",
             f"{info.get('n_beyond_validated_distance', 0)} spots further than the CV scored "
             f"({info.get('validated_distance_um', float('nan')):.0f} um)"]
    ax.text(0.02, 0.95, "\n".join(lines), va="top", ha="left", fontsize=9,
            transform=ax.transAxes)
    ax.axis("off")


def _met_label(annotation, mz, feature) -> str:
    """'Glucose (+2) (m/z 181.0707)': first candidate, how many more, and the m/z."""
    cands = [c.rsplit(" [", 1)[0] for c in str(annotation or "").split(";") if c.strip()]
    cands = [c for c in dict.fromkeys(cands) if c.lower() != "nan"]
    mz_txt = f"m/z {float(mz):.4f}" if pd.notna(mz) else str(feature)
    if not cands:
        return mz_txt
    more = f" (+{len(cands) - 1})" if len(cands) > 1 else ""
    return f"{cands[0][:28]}{more} ({mz_txt})"


def association_heatmap(assoc: pd.DataFrame, path, top: int = 25, value: str = "r",
                        fdr: float = 0.05) -> None:
    """Left: heatmap of the strongest metabolite–gene associations (rows metabolites: first
    annotation candidate, how many more, m/z; columns genes; colour ``value``; a dot marks
    q ≤ ``fdr``). Right: the p-value distribution of every tested pair under the spatial null
    and under plain Pearson (independent maps give a flat histogram; a spike at 0 made of
    smooth, unrelated maps is what plain Pearson over-calls)."""
    if assoc.empty:
        placeholder(path, "No metabolite–gene association was tested.")
        return
    best = assoc.nsmallest(top * 3, "pval")
    mets = list(dict.fromkeys(best["metabolite_feature"]))[:top]
    genes = list(dict.fromkeys(best["gene"]))[:top]
    sub = assoc[assoc["metabolite_feature"].isin(mets) & assoc["gene"].isin(genes)]
    M = sub.pivot_table(index="metabolite_feature", columns="gene", values=value).reindex(
        index=mets, columns=genes)
    first = sub.drop_duplicates("metabolite_feature").set_index("metabolite_feature")
    labels = [_met_label(first.loc[f].get("annotation"), first.loc[f].get("mz"), f) for f in mets]
    spatial = str(assoc["method"].iloc[0]) == "spatial" if "method" in assoc else False
    fig, (ax, axp) = plt.subplots(
        1, 2, figsize=(0.32 * len(genes) + 8.0, 0.28 * len(mets) + 2.2),
        gridspec_kw={"width_ratios": [max(len(genes), 4) * 0.32 + 3, 3.2]})
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
    ax.set_ylabel("metabolite (first candidate, +more, m/z)")
    ax.spines[:].set_visible(False)
    ax.set_title(f"strongest associations (dot: q ≤ {fdr:g})", fontsize=9)
    lab = ("within-domain, kNN-smoothed r" if spatial else "Pearson r across spots") \
        if value == "r" else value
    fig.colorbar(im, ax=ax, label=lab, fraction=0.04, pad=0.02)
    bins = np.linspace(0, 1, 21)
    if spatial and "pearson_pval" in assoc:
        axp.hist(assoc["pearson_pval"].dropna(), bins=bins, color="#BBBBBB",
                 label=f"plain Pearson ({(assoc['pearson_qval'] <= fdr).sum()} at q ≤ {fdr:g})")
    axp.hist(assoc["pval"].dropna(), bins=bins, histtype="step", lw=1.8, color="#4477AA",
             label=f"{'spatial null' if spatial else 'Pearson'} "
                   f"({(assoc['qval'] <= fdr).sum()} at q ≤ {fdr:g})")
    axp.axhline(len(assoc) / 20, color="k", lw=0.8, ls=":")
    axp.set_xlabel("p-value of every tested pair")
    axp.set_ylabel("pairs")
    axp.set_title("p-values (dotted: no association anywhere)", fontsize=9)
    axp.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    savefig(fig, path)


def marker_dotplot(markers: pd.DataFrame, path, n_per_domain: int = 3, fdr: float = 0.05) -> None:
    """Dot plot of domain markers, one panel per modality: the ``n_per_domain`` best
    up-regulated markers of every domain (columns) against every domain (rows); dot size = share
    of the domain's spots where the feature is detected, colour = the domain's mean, scaled 0–1
    per feature; a black edge marks the domain the feature marks (q ≤ ``fdr``)."""
    from ..interpret.markers import top_markers

    mods = [m for m in ("rna", "msi") if m in set(markers.get("modality", []))]
    if markers.empty or not mods:
        placeholder(path, "No domain markers were tested.")
        return
    panels = []
    for mod in mods:
        mk = markers[markers["modality"] == mod]
        top = top_markers(mk, n_per_domain, fdr)
        if top.empty:
            top = top_markers(mk, n_per_domain)
        feats = list(dict.fromkeys(top.sort_values(["domain", "qval"], kind="stable")["feature"]))
        panels.append((mod, mk, top, feats))
    doms = sorted(markers["domain"].unique())
    width = sum(max(len(f), 1) for *_, f in panels) * 0.3 + 3.5 * len(panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(min(width, 40), 0.38 * len(doms) + 2.8),
                             squeeze=False, gridspec_kw={"width_ratios": [max(len(f), 1) + 3
                                                                          for *_, f in panels]})
    for ax, (mod, mk, top, feats) in zip(axes[0], panels):
        if not feats:
            ax.set_axis_off()
            ax.set_title(f"{mod}: no up-regulated markers")
            continue
        sub = mk[mk["feature"].isin(feats)]
        mean = sub.pivot_table(index="domain", columns="feature", values="mean_in").reindex(
            index=doms, columns=feats)
        pct = sub.pivot_table(index="domain", columns="feature", values="pct_in").reindex(
            index=doms, columns=feats)
        lo, hi = mean.min(0), mean.max(0)
        scaled = (mean - lo) / (hi - lo).replace(0, 1)
        yy, xx = np.meshgrid(np.arange(len(doms)), np.arange(len(feats)), indexing="ij")
        sc = ax.scatter(xx.ravel(), yy.ravel(), s=12 + 180 * pct.to_numpy().ravel(),
                        c=scaled.to_numpy().ravel(), cmap="viridis", vmin=0, vmax=1)
        own = {(d, f) for d, f in zip(top["domain"], top["feature"])}
        ex = [(j, i) for i, d in enumerate(doms) for j, f in enumerate(feats) if (d, f) in own]
        if ex:
            ax.scatter(*zip(*ex), s=12 + 180 * np.array([pct.iloc[i, j] for j, i in ex]),
                       facecolors="none", edgecolors="k", linewidths=1.0)
        if mod == "msi":
            ann = mk.drop_duplicates("feature").set_index("feature")
            labels = [_met_label(ann.loc[f].get("annotation"), np.nan, f) if
                      str(ann.loc[f].get("annotation") or "") not in ("", "nan") else str(f)
                      for f in feats]
        else:
            labels = feats
        ax.set_xticks(range(len(feats)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(doms)), [f"domain {d}" for d in doms])
        ax.set_xlim(-0.7, len(feats) - 0.3)
        ax.set_ylim(len(doms) - 0.5, -0.5)
        ax.set_title({"rna": "genes", "msi": "metabolites (m/z features)"}[mod])
        fig.colorbar(sc, ax=ax, label="mean in domain (scaled per feature)", fraction=0.04,
                     pad=0.02)
    for frac in (0.25, 0.5, 1.0):
        axes[0][-1].scatter([], [], s=12 + 180 * frac, c="#999999", label=f"{frac:.0%} detected")
    axes[0][-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=7)
    fig.tight_layout()
    savefig(fig, path)
