"""Cohort figures: every sample (and model) in one panel grid, in the shared style.

Pure plotting: each function takes tables already loaded (see :mod:`.aggregate`) and writes one
PNG. Spatial axes are in µm, domains use the matched ids of :mod:`.domains` (one colour, one
domain, in every panel), samples and models use :data:`~spatialfuse.plots.CATEGORY_PALETTE`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..constants import VISIUM_SPOT_DIAMETER_UM
from ..plots import (
    _frame,
    add_spots,
    category_colours,
    domain_colours,
    domain_handles,
    frame_limits,
    overlay_panel,
    placeholder,
    plt,
    savefig,
)
from ..impute.crossmodal import REFERENCE_TAG
from .conditions import NOTE_ADJUSTED, by_evidence
from .latent import tile_samples

#: metrics whose key says they are a registration error in µm (truth, landmarks, ...)
ERROR_SUFFIX = "_um_median"


def _grid(n: int, ncol_max: int = 4, w: float = 3.6, h: float = 3.4):
    ncol = max(1, min(n, ncol_max))
    nrow = int(np.ceil(n / ncol)) if n else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _metric(metrics: pd.DataFrame, sample: str, stage: str, metric: str, model: str = ""):
    m = metrics[(metrics["sample"] == sample) & (metrics["stage"] == stage)
                & (metrics["metric"] == metric) & (metrics["model"].fillna("") == model)]
    return float(m["value"].iloc[0]) if len(m) else None


def domains_figure(spots: pd.DataFrame, samples: list[str], models: list[str],
                   metrics: pd.DataFrame, path, spot_diameter_um: dict[str, float] | None = None,
                   conditions: dict[str, str] | None = None,
                   square_spots: dict[str, bool] | None = None) -> None:
    """Rows: samples; columns: truth (when any sample has it), then every model.

    ``spots``: one row per sample × barcode with ``x_um``, ``y_um`` and one matched-domain
    column per model (and ``truth``). Each sample's spots are drawn at its spot diameter
    (55 µm when not given), as squares where ``square_spots`` says so (Visium HD bins)."""
    has_truth = "truth" in spots and spots["truth"].notna().any()
    cols = (["truth"] if has_truth else []) + list(models)
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(3.3 * len(cols) + 1.2,
                                                              3.2 * len(samples)), squeeze=False)
    seen = set()
    for i, s in enumerate(samples):
        sub = spots[spots["sample"] == s]
        xy = sub[["x_um", "y_um"]].to_numpy(float)
        d = (spot_diameter_um or {}).get(s, VISIUM_SPOT_DIAMETER_UM)
        square = bool((square_spots or {}).get(s, False))
        for j, c in enumerate(cols):
            ax = axes[i, j]
            lab = sub[c] if c in sub else pd.Series(dtype=float)
            ok = lab.notna().to_numpy() & (lab.fillna(-1).to_numpy() >= 0)
            if not ok.any():
                ax.axis("off")
                ax.set_title(f"{s}: {c} (not available)")
                continue
            labels = lab.to_numpy()[ok].astype(int)
            seen |= set(labels.tolist())
            for k, colour in domain_colours(labels).items():
                add_spots(ax, xy[ok][labels == k], d, square, facecolors=colour, linewidths=0)
            frame_limits(ax, xy[ok])
            title = f"{s}: {c}"
            ari = _metric(metrics, s, "domains", "ari", c) if c != "truth" else None
            if ari is not None:
                title += f"  (ARI {ari:.2f})"
            if c == "truth" and conditions and conditions.get(s):
                title += f"  [{conditions[s]}]"
            _frame(ax, title)
    if seen:
        fig.legend(handles=domain_handles(sorted(seen)), title="domain\n(matched)",
                   loc="center right", frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_size_inches()[0], 1))
    savefig(fig, path)


def registration_figure(overlays: dict[str, dict], qc: dict[str, dict], path) -> None:
    """One overlay panel per sample (MSI tissue pixels mapped into the ST frame over the ST
    spots), then the registration error (µm) per sample, or tissue Dice where no error is known.

    ``overlays``: sample → {"st_xy", "msi_xy", "spot_diameter_um", "pixel_corners_um"} (one
    MSI pixel's corners in the ST frame, :func:`~spatialfuse.plots.aligned_pixel_corners`),
    optionally "square_spots" (Visium HD bins)."""
    samples = list(overlays)
    fig, axes = _grid(len(samples) + 1, ncol_max=4, w=3.8, h=3.6)
    for ax, s in zip(axes, samples):
        o = overlays[s]
        sxy, mxy = o["st_xy"], o["msi_xy"]
        overlay_panel(ax, sxy, mxy, o["pixel_corners_um"], o.get("spot_diameter_um", VISIUM_SPOT_DIAMETER_UM),
                      square_spots=o.get("square_spots", False), legend=ax is axes[0])
        q = qc.get(s, {})
        title = f"{s}: Dice {q.get('tissue_dice', float('nan')):.2f}"
        errs = {k: v for k, v in q.items() if k.endswith(ERROR_SUFFIX) and v is not None}
        if errs:
            k, v = next(iter(errs.items()))
            title += f", {k.split('_error')[0]} error {v:.0f} µm"
        if q.get("flagged"):
            title += "  FLAGGED"
        _frame(ax, title)
        if q.get("flagged"):
            ax.title.set_color("#B2182B")
    ax = axes[len(samples)]
    err_keys = sorted({k for q in qc.values() for k in q if k.endswith(ERROR_SUFFIX)})
    x = np.arange(len(samples))
    if err_keys:
        w = 0.8 / len(err_keys)
        cols = category_colours(err_keys)
        top = 0.0
        for j, k in enumerate(err_keys):
            med = np.array([qc.get(s, {}).get(k, np.nan) for s in samples], float)
            p90 = np.array([qc.get(s, {}).get(k.replace("_median", "_p90"), np.nan)
                            for s in samples], float)
            yerr = np.vstack([np.zeros_like(med), np.where(np.isfinite(p90), p90 - med, 0)])
            ax.bar(x + j * w, med, w, yerr=yerr, capsize=3, color=cols[k],
                   label=k.replace(ERROR_SUFFIX, "").replace("_", " "))
            both = np.r_[med, p90]
            top = max(top, float(np.nanmax(both)) if np.isfinite(both).any() else 0.0)
        if top > 0:  # the whiskers (90th percentiles) inside the axes
            ax.set_ylim(0, 1.1 * top)
        ax.set_xticks(x + w * (len(err_keys) - 1) / 2, samples, rotation=45, ha="right")
        ax.set_ylabel("registration error (µm)\nbar: median, whisker: 90th percentile",
                      fontsize=8)
        if len(err_keys) > 1:  # beside the axes, clear of the whiskers
            ax.set_title("registration error")
            ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:  # one kind: the title names it
            ax.set_title("registration error (" + err_keys[0].replace(ERROR_SUFFIX, "")
                         .replace("_error", "").replace("_", " ") + ")")
    else:
        dice = [qc.get(s, {}).get("tissue_dice", np.nan) for s in samples]
        ax.bar(x, dice, color="#0072B2")
        ax.set_ylim(0, 1)
        ax.set_xticks(x, samples, rotation=45, ha="right")
        ax.set_ylabel("tissue overlap (Dice)")
        ax.set_title("registration overlap (no truth or landmarks)")
    fig.tight_layout()
    savefig(fig, path)


def loss_columns(log: pd.DataFrame) -> list[str]:
    """Columns of a training log that hold a loss (name ends in 'loss') with a finite value."""
    out = []
    for c in log.columns:
        if str(c).lower().endswith("loss"):
            v = pd.to_numeric(log[c], errors="coerce")
            if np.isfinite(v).any():
                out.append(c)
    return out


def training_figure(logs: dict[tuple[str, str], pd.DataFrame], path) -> None:
    """One panel per model: every ``*loss`` column against epoch, one colour per sample,
    line style per loss term (validation dashed)."""
    curves = {k: (v, loss_columns(v)) for k, v in logs.items()}
    curves = {k: v for k, v in curves.items() if v[1]}
    models = list(dict.fromkeys(m for _, m in curves))
    if not models:
        placeholder(path, "No training curves: the models run (e.g. PCA) are not trained "
                          "iteratively, or their logs hold no loss column.")
        return
    samples = list(dict.fromkeys(s for s, _ in curves))
    colours = category_colours(samples)
    fig, axes = _grid(len(models), ncol_max=3, w=4.4, h=3.4)
    for ax, m in zip(axes, models):
        styles = {}
        for (s, mm), (log, cols) in curves.items():
            if mm != m:
                continue
            ep = pd.to_numeric(log["epoch"], errors="coerce") if "epoch" in log else \
                pd.Series(np.arange(len(log)))
            for c in cols:
                ls = styles.setdefault(c, ["-", "--", ":", "-."][len(styles) % 4])
                if c.lower().startswith(("val", "valid")):
                    ls = styles[c] = "--"
                ax.plot(ep, pd.to_numeric(log[c], errors="coerce"), ls=ls, color=colours[s],
                        lw=1.2, label=f"{s} · {c}")
        vals = np.concatenate([pd.to_numeric(v[0][c], errors="coerce").to_numpy(float)
                               for k, v in curves.items() if k[1] == m for c in v[1]])
        vals = vals[np.isfinite(vals)]
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 30:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(f"{m}: training curves")
        ax.legend(frameon=False, fontsize=6.5, ncol=1 if len(samples) < 4 else 2)
    fig.tight_layout()
    savefig(fig, path)


def umap_figure(umap: pd.DataFrame, models: list[str], path) -> None:
    """One panel per model: every sample's own UMAP of that model's joint embedding
    (:func:`~spatialfuse.report.latent.sample_umaps`), side by side on tiles named for the
    sample, coloured by matched domain. ``umap``: model, sample, barcode, umap1, umap2,
    domain."""
    models = [m for m in models if (umap["model"] == m).any()] if len(umap) else []
    if not models:
        placeholder(path, "No embedding to project.")
        return
    n_samples = umap["sample"].nunique()
    ncol = max(1, int(np.ceil(np.sqrt(n_samples))))
    nrow = int(np.ceil(n_samples / ncol))
    side = min(3.2, max(1.6, 7.0 / ncol))  # inches per tile
    fig, axes = plt.subplots(len(models), 1, squeeze=False,
                             figsize=(side * ncol + 2.0, (side * nrow * 1.05 + 0.6) * len(models)))
    for ax, m in zip(axes[:, 0], models):
        u, origin = tile_samples(umap[umap["model"] == m])
        size = max(1.5, min(12.0, 3000 / max(len(u) / max(len(origin), 1), 1)))
        lab = u["domain"].fillna(-1).astype(int).to_numpy()
        cols = domain_colours(lab[lab >= 0])
        if (lab < 0).any():
            ax.scatter(u["x"][lab < 0], u["y"][lab < 0], s=size, c="#bbbbbb", linewidths=0,
                       rasterized=True, label="none")
        for k, c in cols.items():
            sel = lab == k
            ax.scatter(u["x"][sel], u["y"][sel], s=size, c=c, linewidths=0, label=str(k),
                       rasterized=True)
        for s, (ox, oy) in origin.items():
            ax.add_patch(plt.Rectangle((ox - 0.03, oy - 0.03), 1.06, 1.06, fill=False, lw=0.6,
                                       ec="#999999"))
            ax.text(ox + 0.5, oy + 1.06, s, ha="center", va="bottom", fontsize=8)
        ax.legend(title="domain (matched)", frameon=False, fontsize=7, markerscale=1.5,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title(f"{m}: joint embedding of each sample (its own UMAP)", fontsize=9)
        ax.set_aspect("equal")
        ax.set_axis_off()
    fig.tight_layout()
    savefig(fig, path)


#: The cross-modal directions of impute's metrics.json and feature_scores.tsv, as the report
#: names them.
PREDICTION_TASKS = (("rna_to_msi", "genes → metabolites"), ("msi_to_rna", "metabolites → genes"))
#: Tasks of ``feature_scores.tsv`` in the order the imputation figure lists them, with a label
#: (``{mod}``: the modality's name).
IMPUTE_TASKS = (*PREDICTION_TASKS, ("denoise", "{mod}, hidden spots"),
                ("heldout_entries", "{mod}, hidden entries"))
MODALITY_NAMES = {"rna": "genes", "msi": "metabolites"}


#: How the imputation table names the blocked CV's location-only references (not methods:
#: never in bold); the key-metrics panel shows the stronger of the two under this label.
REFERENCE_LABEL = f"location only {REFERENCE_TAG}"


def method_medians(scores: pd.DataFrame, samples: list[str]) -> pd.DataFrame:
    """Median held-out Pearson r of every task and method (rows, labelled "task: method",
    cross-modal prediction first, then denoising and hidden entries per modality) in every
    sample (columns; NaN where a sample lacks the method). ``scores``: sample, modality, task,
    method, pearson_r (the impute stage's ``feature_scores.tsv`` rows). The location-only
    references of the cross-modal CV come last in their task, labelled by
    :func:`~spatialfuse.impute.crossmodal.reference_label`."""
    from ..impute.crossmodal import REFERENCES, reference_label

    if scores.empty:
        return pd.DataFrame(columns=samples, dtype=float)
    order = {t: i for i, (t, _) in enumerate(IMPUTE_TASKS)}
    keys = scores[["task", "modality", "method"]].drop_duplicates()
    keys = keys.assign(_o=keys["task"].map(order).fillna(len(order)),
                       _m=keys["modality"].map({"rna": 0, "msi": 1}).fillna(2),
                       _r=keys["method"].isin(REFERENCES))
    keys = keys.sort_values(["_o", "_m", "_r"], kind="stable")
    med = scores.groupby(["task", "modality", "method", "sample"])["pearson_r"].median()
    labels = dict(IMPUTE_TASKS)
    rows, index = [], []
    for task, mod, meth in keys[["task", "modality", "method"]].itertuples(index=False):
        name = (reference_label(meth) if meth in REFERENCES
                else str(meth).removesuffix("_from_rna").removesuffix("_from_msi"))
        head = labels.get(task, f"{task}").format(mod=MODALITY_NAMES.get(mod, mod))
        index.append(f"{head}: {name}")
        rows.append([med.get((task, mod, meth, s), np.nan) for s in samples])
    return pd.DataFrame(rows, index=index, columns=samples, dtype=float)


def imputation_figure(pairs: dict[str, dict], scores: pd.DataFrame, path) -> None:
    """Per sample: measured vs held-out predicted metabolite intensity of the best genes →
    metabolites method, every spot × metabolite (per-metabolite z-scores, density); below, the
    median held-out r of every method in every sample (:func:`method_medians`), the best of
    each task in bold.

    ``pairs``: sample → {"measured", "predicted" (1-D z-scores), "method", "median_r"};
    ``scores``: sample, modality, task, method, feature, pearson_r."""
    samples = list(dict.fromkeys([*pairs, *(scores["sample"] if len(scores) else [])]))
    table = method_medians(scores, samples)
    n = len(pairs)
    ncol = max(1, min(n, 4))
    nrow = int(np.ceil(n / ncol)) if n else 0
    heat_h = 0.9 + 0.22 * len(table) if len(table) else 0.0
    if not nrow and not heat_h:
        placeholder(path, "No imputation scores to show.")
        return
    # the panels and the table in sub-figures of their own, so that the table's long row
    # labels do not squeeze the panels above them
    heights = [h for h in (3.3 * nrow, heat_h) if h]
    fig = plt.figure(figsize=(max(3.3 * ncol, 4.0 + 0.9 * len(samples), 7.0), sum(heights)),
                     layout="constrained")
    subs = list(np.atleast_1d(fig.subfigures(len(heights), 1, height_ratios=heights)))
    top = subs[0] if nrow else None
    panels = top.subplots(nrow, ncol, squeeze=False).ravel() if nrow else []
    for ax in panels[n:]:
        ax.axis("off")
    for ax, s in zip(panels, pairs):
        p = pairs[s]
        meas, pred = np.asarray(p["measured"]), np.asarray(p["predicted"])
        ok = np.isfinite(meas) & np.isfinite(pred)
        if ok.sum() < 3:
            ax.axis("off")
            ax.set_title(f"{s}: no held-out predictions")
            continue
        ax.hexbin(meas[ok], pred[ok], gridsize=40, cmap="viridis", bins="log", mincnt=1,
                  extent=(-3, 3, -3, 3))
        ax.plot([-3, 3], [-3, 3], color="#BBBBBB", lw=0.8, ls="--")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        r = np.corrcoef(meas[ok], pred[ok])[0, 1]
        ax.set_title(f"{s}\n{p['method']}\npooled r {r:.2f}, median per metabolite "
                     f"{p['median_r']:.2f}", fontsize=7.5)
        ax.set_xlabel("measured (z-score per metabolite)")
        ax.set_ylabel("predicted, held-out (z-score)")
    if heat_h:
        ax = subs[-1].subplots()
        V = table.to_numpy(float)
        lim = max(0.1, float(np.nanmax(np.abs(V)))) if np.isfinite(V).any() else 1.0
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#E0E0E0")
        im = ax.imshow(np.ma.masked_invalid(V), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        heads = [lab.split(": ")[0] for lab in table.index]
        for j in range(V.shape[1]):  # the best method of each task, per sample, in bold
            for head in dict.fromkeys(heads):
                rows = [i for i, h in enumerate(heads) if h == head]
                cand = [i for i in rows if not table.index[i].endswith(REFERENCE_TAG)]
                col = V[cand, j]
                best = cand[int(np.nanargmax(col))] if np.isfinite(col).any() else None
                for i in rows:
                    if np.isfinite(V[i, j]):
                        ax.text(j, i, f"{V[i, j]:.2f}", ha="center", va="center", fontsize=8,
                                fontweight="bold" if i == best else "normal",
                                color="white" if abs(V[i, j]) > 0.6 * lim else "black")
        for i in range(1, len(heads)):
            if heads[i] != heads[i - 1]:
                ax.axhline(i - 0.5, color="white", lw=2)
        ax.set_yticks(range(len(table)), table.index, fontsize=8)
        ax.set_xticks(range(len(samples)), samples, rotation=30, ha="right", fontsize=8)
        ax.spines[:].set_visible(False)
        subs[-1].colorbar(im, ax=ax, label="median held-out r", fraction=0.04, pad=0.01)
        ax.set_title("median held-out Pearson r per feature, every method (bold: the best of "
                     "its task; location only: a reference, not a method)", fontsize=8.5)
    savefig(fig, path)


def association_figure(links: pd.DataFrame, samples: list[str], path, fdr: float = 0.05) -> None:
    """The strongest metabolite–gene links of the cohort (rows) in every sample (columns):
    colour = correlation r, a dot where the link is significant (q ≤ fdr) in that sample.

    ``links``: one row per link with ``label`` and ``r:<sample>``/``q:<sample>`` columns."""
    if links.empty:
        placeholder(path, "No metabolite–gene association was tested.")
        return
    R = links[[f"r:{s}" for s in samples]].to_numpy(float)
    Q = links[[f"q:{s}" for s in samples]].to_numpy(float)
    fig, ax = plt.subplots(figsize=(2.2 + 0.75 * len(samples), 1.4 + 0.24 * len(links)))
    lim = np.nanmax(np.abs(R)) if np.isfinite(R).any() else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#E0E0E0")
    im = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    yy, xx = np.nonzero(Q <= fdr)
    ax.scatter(xx, yy, s=6, c="k", marker="o")
    ax.set_xticks(range(len(samples)), samples, rotation=45, ha="right")
    ax.set_yticks(range(len(links)), links["label"], fontsize=6.5)
    ax.set_xlabel("sample")
    ax.spines[:].set_visible(False)
    fig.colorbar(im, ax=ax, label="Pearson r across spots", fraction=0.05, pad=0.02)
    ax.set_title(f"metabolite–gene links (dot: q ≤ {fdr:g}; grey: not measured)", fontsize=8.5)
    fig.tight_layout()
    savefig(fig, path)


def pathway_figure(pathways: pd.DataFrame, path, fdr: float = 0.05, top: int = 20) -> None:
    """Dot plot of the most enriched pathways: rows pathways, columns sample · domain; dot size
    = overlap (members found), colour = −log10 q. ``pathways``: sample, query, pathway_name,
    overlap, qval."""
    if pathways.empty or "qval" not in pathways:
        placeholder(path, "No pathway was tested (no domain had significant markers that map to "
                          "the pathway table).")
        return
    p = pathways.dropna(subset=["qval"]).copy()
    best = p.groupby("pathway_name")["qval"].min().nsmallest(top)
    p = p[p["pathway_name"].isin(best.index)]
    if p.empty:
        placeholder(path, "No pathway enrichment to show.")
        return
    p["column"] = p["sample"].astype(str) + " · " + p["query"].astype(str)
    rows, cols = list(best.index), sorted(p["column"].unique())
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * len(cols) + 3.0, 1.2 + 0.28 * len(rows)))
    y = p["pathway_name"].map({r: i for i, r in enumerate(rows)})
    x = p["column"].map({c: i for i, c in enumerate(cols)})
    score = -np.log10(p["qval"].clip(lower=1e-300))
    sc = ax.scatter(x, y, s=12 + 12 * p["overlap"].astype(float), c=score, cmap="viridis",
                    edgecolors=np.where(p["qval"] <= fdr, "k", "none"), linewidths=0.6)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [r if len(r) <= 60 else r[:59] + "…" for r in rows],
                  fontsize=7)
    ax.set_xlim(-0.5, len(cols) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    fig.colorbar(sc, ax=ax, label="−log10 q", fraction=0.05, pad=0.02)
    ax.set_title(f"pathway enrichment (outlined: q ≤ {fdr:g}; size: members found)", fontsize=9)
    fig.tight_layout()
    savefig(fig, path)


def composition_figure(spots: pd.DataFrame, model: str, conditions: dict[str, str], path) -> None:
    """Fraction of each sample's spots in each matched domain (stacked bars), samples grouped
    by condition; with two or more conditions, a second panel compares the fractions per
    domain between conditions (one dot per sample, bar = condition mean)."""
    if model not in spots:
        placeholder(path, f"No domains from model {model!r}.")
        return
    sub = spots.dropna(subset=[model])
    frac = pd.crosstab(sub["sample"], sub[model].astype(int), normalize="index")
    cond = {s: (conditions.get(s) or "") for s in frac.index}
    order = sorted(frac.index, key=lambda s: (cond[s], list(frac.index).index(s)))
    frac = frac.loc[order]
    levels = list(dict.fromkeys(c for c in (cond[s] for s in order) if c))
    two = len(levels) >= 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    bottom = np.zeros(len(frac))
    colours = domain_colours(frac.columns)
    for d in frac.columns:
        ax.bar(range(len(frac)), frac[d], bottom=bottom, color=colours[int(d)], label=str(d),
               edgecolor="white", linewidth=0.4)
        bottom += frac[d].to_numpy()
    ax.set_xticks(range(len(frac)), [f"{s}\n{cond[s]}" if cond[s] else s for s in frac.index],
                  rotation=45, ha="right")
    ax.set_ylabel("fraction of spots")
    ax.set_ylim(0, 1)
    ax.set_title(f"domain composition per sample ({model})")
    ax.legend(title="domain", frameon=False, fontsize=7, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
    if two:
        ax = axes[0, 1]
        ccol = category_colours(levels)
        w = 0.8 / len(levels)
        for j, lev in enumerate(levels):
            ss = [s for s in frac.index if cond[s] == lev]
            for i, d in enumerate(frac.columns):
                v = frac.loc[ss, d].to_numpy()
                xpos = i + j * w - 0.4 + w / 2
                ax.bar(xpos, v.mean(), w * 0.9, color=ccol[lev], alpha=0.45,
                       label=lev if i == 0 else None)
                ax.scatter(np.full(len(v), xpos), v, s=12, color=ccol[lev], zorder=3)
        ax.set_xticks(range(len(frac.columns)), [f"domain {d}" for d in frac.columns])
        ax.set_ylabel("fraction of spots")
        ax.set_title("domain abundance by condition (dots: samples)")
        ax.legend(title="condition", frameon=False, fontsize=7)
    fig.tight_layout()
    savefig(fig, path)


def crossmodal_best(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per sample and direction, the best baseline's and the best model-based method's median
    held-out r (pooled over the blocks), and the location-only reference's, from the impute
    stage's metrics (long table: sample, stage, metric, value; metrics
    ``crossmodal.<task>.<method>.median_pearson``). Returns sample, metric (a label such as
    "genes → metabolites: best baseline"), value."""
    from ..impute.crossmodal import BASELINES, REFERENCES, SPARSE_BASELINE

    kinds = {**{m: "best baseline" for m in (*BASELINES, SPARSE_BASELINE)},
             **{m: REFERENCE_LABEL for m in REFERENCES}}
    imp = metrics[(metrics["stage"] == "impute")
                  & metrics["metric"].str.startswith("crossmodal.")
                  & metrics["metric"].str.endswith(".median_pearson")]
    parts = imp["metric"].str.split(".")
    imp = imp[parts.str.len() == 4].assign(task=parts.str[1], method=parts.str[2])
    imp = imp.assign(kind=imp["method"].map(kinds).fillna("best model-based"))
    rows = []
    for task, head in PREDICTION_TASKS:
        for kind in ("best baseline", "best model-based", REFERENCE_LABEL):
            sel = imp[(imp["task"] == task) & (imp["kind"] == kind)]
            for smp, v in sel.groupby("sample", sort=False)["value"].max().items():
                rows.append((smp, f"{head}: {kind}", float(v)))
    return pd.DataFrame(rows, columns=["sample", "metric", "value"])


def metrics_figure(metrics: pd.DataFrame, path) -> None:
    """Registration error (µm, or Dice); domain ARI per model (or, without a truth, the
    domains' neighbour agreement); per direction of cross-modal prediction the best baseline's
    and the best model-based method's median held-out r, and location alone's
    (:func:`crossmodal_best`)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    samples = list(dict.fromkeys(metrics["sample"]))
    x = np.arange(len(samples))

    def bars(ax, table: pd.DataFrame, key: str, label_of=str):
        groups = list(dict.fromkeys(table[key]))
        w = 0.8 / max(len(groups), 1)
        cols = category_colours(groups)
        for j, g in enumerate(groups):
            v = table[table[key] == g].groupby("sample")["value"].first()
            ax.bar(x + j * w, [v.get(s, np.nan) for s in samples], w, label=label_of(g),
                   color=cols[g])
        ax.set_xticks(x + w * (len(groups) - 1) / 2, samples, rotation=45, ha="right")
        if len(groups) > 1:  # beside the axes, clear of the bars; one series: the axis says it
            ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return groups

    reg = metrics[(metrics["stage"] == "align") & metrics["metric"].str.endswith(ERROR_SUFFIX)]
    if len(reg):
        bars(axes[0], reg, "metric", lambda k: k.replace(ERROR_SUFFIX, "").replace("_", " "))
        axes[0].set_ylabel("median registration error (µm)")
        axes[0].set_title("registration error")
    else:
        bars(axes[0], metrics[(metrics["stage"] == "align") & (metrics["metric"] == "tissue_dice")],
             "metric")
        axes[0].set_ylabel("tissue overlap (Dice)")
        axes[0].set_ylim(0, 1)
        axes[0].set_title("registration overlap")
    dm = metrics[(metrics["stage"] == "domains") & (metrics["metric"] == "ari")]
    if len(dm):
        bars(axes[1], dm, "model")
        axes[1].set_ylabel("ARI vs truth")
        axes[1].set_ylim(0, 1)
        axes[1].set_title("domain recovery")
    elif len(cont := metrics[(metrics["stage"] == "domains")
                             & (metrics["metric"] == "neighbour_agreement")]):
        # no truth: how spatially coherent each model's domains are instead
        bars(axes[1], cont, "model")
        axes[1].set_ylabel("neighbour pairs in the same domain")
        axes[1].set_ylim(0, 1)
        axes[1].set_title("domain continuity (no truth to score against)")
    else:
        axes[1].text(0.5, 0.5, "no ground truth:\nno domain accuracy", ha="center", va="center",
                     transform=axes[1].transAxes)
        axes[1].set_axis_off()
    imp = crossmodal_best(metrics)
    if len(imp):
        bars(axes[2], imp, "metric")
        axes[2].axhline(0, color="#999999", lw=0.6)
        axes[2].set_ylabel("median held-out Pearson r")
        axes[2].set_title("cross-modal prediction (blocked CV)")
    else:
        axes[2].text(0.5, 0.5, "no cross-modal prediction", ha="center", va="center",
                     transform=axes[2].transAxes)
        axes[2].set_axis_off()
    fig.tight_layout()
    savefig(fig, path)


def conditions_figure(feats: pd.DataFrame, abund: pd.DataFrame, path, fdr: float = 0.05,
                      top: int = 20) -> None:
    """Per-domain differences between conditions (samples as replicates): one heat map per
    modality of the log2 fold change (rows: domains, columns: the ``top`` features by q, or by
    |log2 fold change| where no test was possible), a dot where q ≤ ``fdr``; a last panel with
    the change in each domain's share of spots."""
    if feats.empty and abund.empty:
        placeholder(path, "No condition contrast: the samples sheet needs two conditions.")
        return
    contrast = str((feats if len(feats) else abund)["contrast"].iloc[0])
    f = feats[feats["contrast"] == contrast]
    mods = [m for m in ("rna", "msi") if m in set(f["modality"])]
    fig, axes = plt.subplots(1, len(mods) + 1, figsize=(6.5 * len(mods) + 3.6, 4.2),
                             squeeze=False, gridspec_kw={"width_ratios": [5] * len(mods) + [2]})
    for ax, mod in zip(axes[0], mods):
        sub = f[f["modality"] == mod]
        tested = sub["pval"].notna().any()
        order = by_evidence(sub)
        feats_top = list(dict.fromkeys(order["feature"]))[:top]
        M = sub.pivot_table(index="domain", columns="feature", values="log2fc").reindex(
            columns=feats_top)
        lim = float(np.nanmax(np.abs(M.to_numpy()))) if M.size else 1.0
        im = ax.imshow(M.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        if tested:
            Q = sub.pivot_table(index="domain", columns="feature", values="qval").reindex(
                index=M.index, columns=feats_top).to_numpy()
            yy, xx = np.nonzero(Q <= fdr)
            ax.scatter(xx, yy, s=8, c="k")
        labels = [str(x).split(";")[0].rsplit(" [", 1)[0][:28] for x in feats_top]
        ax.set_xticks(range(len(feats_top)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(M.index)), [f"domain {d}" for d in M.index])
        ax.spines[:].set_visible(False)
        what = {"rna": "genes", "msi": "metabolites"}[mod]
        within = sub["note"].astype(str).str.startswith(NOTE_ADJUSTED).any()
        ax.set_title(f"{what}: {contrast}" + (" within batches" if within else "")
                     + (f" (dot: q ≤ {fdr:g})" if tested else
                        " (effect only: see the table's note)"), fontsize=9)
        fig.colorbar(im, ax=ax, label="log2 fold change (domain pseudo-bulk)", fraction=0.04,
                     pad=0.02)
    ax = axes[0][-1]
    a = abund[abund["contrast"] == contrast]
    if len(a):
        colours = domain_colours(a["domain"].astype(int))
        ax.barh(range(len(a)), a["difference"], color=[colours[int(d)] for d in a["domain"]])
        ax.set_yticks(range(len(a)), [f"domain {d}" for d in a["domain"]])
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        for i, q in enumerate(a["qval"]):
            if pd.notna(q) and q <= fdr:
                ax.text(a["difference"].iloc[i], i, " *", va="center")
    ax.set_xlabel("change in share of spots")
    ax.set_title("domain abundance", fontsize=9)
    fig.tight_layout()
    savefig(fig, path)
