"""Stage 8: the pipeline's single-file HTML summary (offline: images embedded, no CDN).

Opens with the answer — what needs attention, then per sample its domains (an interactive spot
map), registration quality and best metabolite–gene links — then the cohort figures with their
captions, the tables (sortable, filterable) and provenance: pipeline version, package
versions, configuration, seeds, input checksums and run time per rule.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
from pathlib import Path

import pandas as pd
import yaml

from ..align.stage import OUTSIDE_CAPTURE_NOTE
from ..constants import Key
from ..plots import spot_geometry
from ..impute.crossmodal import REFERENCE_NAMES, REFERENCE_TAG, stronger_reference
from ..pixels import describe
from . import provenance
from .aggregate import ResultsTree, collect_flags, read_json
from .conditions import by_evidence
from .figures import MODALITY_NAMES, PREDICTION_TASKS
from .html import (
    CSS,
    JS,
    caption_html,
    figure,
    filter_box,
    palette_css,
    spot_map_svg,
    table_html,
)

log = logging.getLogger(__name__)

#: Sections of cohort figures: (anchor, heading, [(aggregate output key, caption name)])
COHORT_FIGURES = [
    ("domains", "Spatial domains", [("domains_figure", "domains"),
                                    ("composition_figure", "composition")]),
    ("registration", "Registration", [("registration_figure", "registration")]),
    ("models", "Joint models", [("umap_figure", "umap"), ("training_figure", "training")]),
    ("imputation", "Imputation and cross-modal prediction", [("imputation_figure", "imputation")]),
    ("biology", "Metabolite–gene biology", [("associations_figure", "links"),
                                            ("pathways_figure", "pathways")]),
    ("metrics", "Metrics across samples", [("metrics_figure", "metrics_figure")]),
]
#: Per-sample figures (folded under their section): (section anchor, caption name, label)
SAMPLE_FIGURES = [
    ("registration", "align_overlay", "registration overlay"),
    ("imputation", "impute", "predicted ion images"),
    ("biology", "associations", "association heatmap"),
    ("biology", "markers", "domain markers (dot plot)"),
    ("ingest", "ingest_qc", "ingest QC"),
]


def read_captions(files) -> dict[str, str]:
    """Caption text (reStructuredText, as written for ``snakemake --report``) by file stem."""
    return {Path(p).stem: Path(p).read_text(encoding="utf-8") for p in files if Path(p).exists()}


def _error_keys(qc: dict) -> list[str]:
    return [k for k in qc if k.endswith("_error_um_median") and qc[k] is not None]


def outside_capture_lines(q: dict) -> list[tuple[str, str]]:
    """The share of the MSI tissue that the registration placed outside the ST capture area
    (from :data:`~spatialfuse.align.stage.OUTSIDE_CAPTURE_NOTE` on), and with a truth the
    error of the pixels inside it, where there are spots to pair with."""
    out = []
    frac = q.get("msi_tissue_outside_capture")
    if isinstance(frac, (int, float)) and frac >= OUTSIDE_CAPTURE_NOTE:
        out.append(("MSI tissue outside the capture area", f"{frac:.0%} of it: placed by the transform's "
                    "extrapolation (no spots there to check it by), paired with no spot"))
        med = q.get("truth_error_um_median_in_capture")
        if isinstance(med, (int, float)):
            out.append(("registration error in the capture area", f"{med:.1f} µm median"))
    return out


def _link_text(rec: dict) -> str:
    ann = str(rec.get("annotation") or "").split(";")[0].rsplit(" [", 1)[0]
    met = ann or rec.get("metabolite_feature", "?")
    r = rec.get("r")
    return f"{met} ~ {rec.get('gene', '?')}" + (f" (r = {r:.2f})" if isinstance(r, float) else "")


def _glance(samples, conditions, qc, interp, metrics, flags, batches=None) -> pd.DataFrame:
    batches = batches or {}
    rows = []
    for s in samples:
        q = qc.get(s, {})
        row = {"sample": s}
        if any(conditions.values()):
            row["condition"] = conditions.get(s, "")
        if any(conditions.values()) and len(set(batches.values())) > 1:  # compared within
            row["batch"] = batches.get(s, "")
        row["spots paired"] = q.get("spots_covered")
        row["tissue Dice"] = q.get("tissue_dice")
        if q.get("affine_uncertainty_um") is not None:
            row["registration uncertainty (µm)"] = q["affine_uncertainty_um"]
        for k in _error_keys(q):
            what = k.replace("_error_um_median", "").replace("_", " ")
            label = "registration error (µm, median)" if what == "truth" else \
                f"{what} error (µm, median)"
            row[label] = q[k]
        dm = metrics[(metrics["sample"] == s) & (metrics["stage"] == "domains")
                     & (metrics["metric"] == "ari")]
        for r in dm.itertuples():
            row[f"ARI {r.model}"] = r.value
        top = (interp.get(s, {}).get("top_associations") or [None])[0]
        if top:
            row["top metabolite–gene link"] = _link_text(top)
        lr = interp.get(s, {}).get("link_recovery")
        if lr:
            row["true links recovered"] = _recovered(lr)
        row["needs attention"] = bool((flags["sample"] == s).any())
        rows.append(row)
    return pd.DataFrame(rows)


def ingest_numbers(samples, ingest: dict) -> pd.DataFrame:
    """Per sample: what ingest read and what its filters kept (from each ``ingest/qc.json``)."""
    rows = []
    for s in samples:
        q = ingest.get(s, {})
        st, msi = q.get("st", {}), q.get("msi", {})
        sm, mm = q.get("st_meta", {}), q.get("msi_meta", {})
        hd = sm.get("platform") == "visium_hd"
        size = (f" ({sm.get('spot_diameter_um'):g} µm squares of {sm['pooled_from_um']:g} µm bins)"
                if sm.get("pooled_from_um") else f" ({sm.get('spot_diameter_um'):g} µm bins)")
        rows.append({
            "sample": s,
            "ST platform": f"{sm.get('platform', '?')}" + (size if hd else ""),
            "spots: read → in tissue → kept": f"{_n(st.get('spots_input'))} → "
                                              f"{_n(st.get('spots_in_tissue'))} → "
                                              f"{_n(st.get('spots_after_qc'))}",
            "spots removed (low counts / low genes / high mito)":
                " / ".join(_n(st.get(k)) for k in ("spots_removed_low_counts",
                                                    "spots_removed_low_genes",
                                                    "spots_removed_high_mt")),
            "genes: read → kept (HVG)": f"{_n(st.get('genes_input'))} → "
                                        f"{_n(st.get('genes_after_qc'))} "
                                        f"({_n(st.get('highly_variable_genes'))})",
            "MSI": f"{mm.get('imzml_layout', '?')} {mm.get('spectrum_type', '')}, "
                   + (describe(mm) if mm.get("pixel_size_um") is not None else "? µm"),
            "pixels (on tissue)": f"{_n(msi.get('pixels'))} ({_n(msi.get('pixels_on_tissue'))})",
            "m/z peaks: read → kept": f"{_n(msi.get('peaks_input'))} → "
                                      f"{_n(msi.get('peaks_after'))}",
            "matrix / rare peaks": f"{_n(msi.get('matrix_peaks'))}"
                                   + (" removed" if msi.get("matrix_peaks_removed", True)
                                      else " flagged, kept") + f" / {_n(msi.get('rare_peaks'))}",
            "peaks annotated (ambiguous)": f"{_n(msi.get('peaks_annotated'))} "
                                           f"({_n(msi.get('peaks_ambiguous'))})",
            "normalisation": f"{msi.get('normalisation', '?')} + {msi.get('transform', 'log1p')}",
        })
    return pd.DataFrame(rows)


def _recovered(lr: dict) -> str:
    return f"{lr.get('true_positives')}/{lr.get('true_links_tested')}"


def link_recovery_text(lr: dict) -> str:
    """"true links found / tested (precision)"; with no link called significant the precision
    is undefined (NaN in the stage's JSON) and the text says so."""
    prec = lr.get("precision")
    if isinstance(prec, (int, float)) and math.isfinite(prec):
        return f"{_recovered(lr)} (precision {prec:.2f})"
    return f"{_recovered(lr)} (no link called significant, so no precision)"


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else ("?" if v is None else str(v))


def prediction_lines(imp: dict) -> list[tuple[str, str]]:
    """Per direction: the best model-based method against the best baseline on held-out r,
    pooled and within blocks, with the paired interval and its verdict (impute's
    ``model_vs_baselines``), e.g. ``pooled: vae 0.14 vs ridge 0.11, +0.030 [+0.008, +0.049]
    better``, then what location alone scored there (the stronger of the CV's two references
    on each score, impute's ``location`` and ``location_kriging``, named) and how far the best
    model-based method and the best baseline are above it within blocks
    (``<kind>_vs_location_block``). Directions without the model comparison (no
    models run) are left out."""
    out = []
    for task, label in PREDICTION_TASKS:
        res = (imp.get("crossmodal") or {}).get(task) or {}
        parts = []
        for suffix, where in (("", "pooled"), ("_block", "within blocks")):
            v = res.get(f"model_vs_baselines{suffix}")
            if not isinstance(v, dict) or "verdict" not in v:
                continue
            key = f"median_pearson{suffix}"
            rm = (res.get(v["method"]) or {}).get(key, float("nan"))
            rb = (res.get(v["baseline"]) or {}).get(key, float("nan"))
            parts.append(f"{where}: {v['method']} {rm:.2f} vs {v['baseline']} {rb:.2f}, "
                         f"{v['difference']:+.3f} [{v['ci95_low']:+.3f}, {v['ci95_high']:+.3f}] "
                         f"{v['verdict']}")
        if parts and stronger_reference(res):  # what location alone scored on the same blocks
            loc = []
            for suffix, where in (("", "pooled"), ("_block", "within blocks")):
                ref = stronger_reference(res, f"median_pearson{suffix}")
                loc.append(f"{where} {res[ref].get(f'median_pearson{suffix}', float('nan')):.2f}"
                           f" ({REFERENCE_NAMES.get(ref, ref)})")
            parts.append(f"location only {REFERENCE_TAG}: " + ", ".join(loc))
            # and how far each kind's best method is above it within blocks, where location
            # is at its strongest: what the source modality adds
            above = [f"{v['method']} {v['difference']:+.3f} [{v['ci95_low']:+.3f}, "
                     f"{v['ci95_high']:+.3f}] {v['verdict']}"
                     for who in ("model", "baseline")
                     if isinstance(v := res.get(f"{who}_vs_location_block"), dict)
                     and "verdict" in v]
            if above:
                parts.append("above location within blocks: " + ", ".join(above))
        if parts:
            out.append((f"{label}, held-out r (best model vs best baseline)", "; ".join(parts)))
    # where the best predicted maps are, for whoever takes them further
    maps = []
    for task, _ in PREDICTION_TASKS:
        best = ((imp.get("crossmodal") or {}).get(task) or {}).get("best_method")
        if isinstance(best, str) and best:
            src, tgt = task.split("_to_")
            maps.append(f"{MODALITY_NAMES[tgt]} from {MODALITY_NAMES[src]}: {tgt} layer "
                        f"{Key.layers.imputed(f'{best}_from_{src}')}")
    if maps:
        out.append(("best predicted maps (impute/imputed.h5mu)", "; ".join(maps)))
    un = imp.get("unmeasured_spots") or {}
    if un.get("n_spots"):
        held = un.get("heldout_pearson_median", float("nan"))
        beyond = un.get("n_beyond_validated_distance", 0)
        out.append(("spots without MSI", (
            f"{_n(un['n_spots'])}: metabolites predicted from genes by {un.get('method')}"
            + (", averaged with the measured MSI around them (better on the held-out blocks)"
               if un.get("output") == "combined" else "")
            + f" (held-out median r {held:.2f})"
            + (f"; {_n(beyond)} further from measured spots than the CV scored "
               f"({un.get('validated_distance_um', float('nan')):.0f} µm)" if beyond else ""))))
    return out


def _card(s, cond, q, ingest, it, metrics, flags, spots, layers, default, params, seed,
          imp: dict | None = None) -> str:
    flagged = flags[flags["sample"] == s]
    badges = f"<span class='badge'>{html.escape(cond)}</span>" if cond else ""
    badges += ("<span class='badge bad'>needs attention</span>" if len(flagged)
               else "<span class='badge good'>no flags</span>")
    diam, square = spot_geometry(ingest.get("st_meta"))
    sub = spots[spots["sample"] == s]
    layers = [ly for ly in layers if ly in sub and sub[ly].notna().any()]
    smap = spot_map_svg(sub, layers, default, diameter_um=diam, square=square,
                        max_spots=int(params.get("map_max_spots", 5000)), seed=seed,
                        label=f"{s}: spatial domains")
    kv = []
    if "tissue_dice" in q:
        kv.append(("tissue overlap (Dice)", f"{q['tissue_dice']:.2f}"))
    if isinstance(q.get("affine_uncertainty_um"), (int, float)):
        kv.append(("registration uncertainty", f"±{q['affine_uncertainty_um']:.1f} µm (affine refitted "
                   "on halves of the section; a smooth warp adds to it)"))
    for k in _error_keys(q):
        p90 = q.get(k.replace("_median", "_p90"))
        what = k.replace("_error_um_median", "").replace("_", " ")
        kv.append((f"{what} registration error", f"{q[k]:.1f} µm median"
                   + (f", {p90:.1f} µm p90" if isinstance(p90, (int, float)) else "")))
    kv += outside_capture_lines(q)
    if "spots_covered" in q:
        kv.append(("spots with MSI", f"{_n(q['spots_covered'])} of {_n(q.get('spots'))}"))
    dm = metrics[(metrics["sample"] == s) & (metrics["stage"] == "domains")]
    for m in dict.fromkeys(dm["model"]):
        vals = dm[dm["model"] == m].set_index("metric")["value"]
        txt = f"{int(vals['n_domains'])} domains" if "n_domains" in vals else ""
        if "ari" in vals:
            txt += f", ARI {vals['ari']:.2f} vs truth"
        kv.append((f"domains: {m}", txt))
    if it.get("associations_tested") is not None:
        pear = it.get("associations_significant_pearson")
        kv.append(("metabolite–gene pairs", f"{_n(it.get('associations_significant'))} significant"
                   f" of {_n(it['associations_tested'])} tested (FDR {it.get('fdr', '?')}"
                   + (f", {it['association_method']} test" if it.get("association_method") else "")
                   + ")" + (f"; plain Pearson would call {_n(pear)}" if pear is not None else "")))
    kv += prediction_lines(imp or {})
    lr = it.get("link_recovery")
    if lr:
        kv.append(("known links recovered", link_recovery_text(lr)))
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in kv)
    links = it.get("top_associations") or []
    lis = "".join(f"<li>{html.escape(_link_text(r))}"
                  + (f" <span class='muted'>q = {r['qval']:.1e}</span>"
                     if isinstance(r.get("qval"), float) else "") + "</li>" for r in links[:3])
    warn = "".join(f"<li>{html.escape(m.stage)}: {html.escape(m.message)}</li>"
                   for m in flagged.itertuples())
    return (f"<div class='card{' flagged' if len(flagged) else ''}' id='sample-{html.escape(s)}'>"
            f"<h3>{html.escape(s)} {badges}</h3>"
            + (f"<ul class='flaglist'>{warn}</ul>" if warn else "")
            + smap + f"<dl class='kv'>{dl}</dl>"
            + (f"<b>Best metabolite–gene links</b><ol>{lis}</ol>" if lis else "") + "</div>")


def _cohort_order(t: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of a cohort table in the order the report shows them (:func:`.conditions.by_evidence`)
    and that order in words."""
    low = {c.lower(): c for c in t.columns}
    qcol = next((low[c] for c in ("qval", "q", "padj", "fdr") if c in low), None)
    ecol = next((low[c] for c in ("log2fc", "logfc", "effect") if c in low), None)
    if qcol and pd.to_numeric(t[qcol], errors="coerce").notna().any():
        return by_evidence(t, qcol, ecol), f"by {html.escape(qcol)}"
    if ecol and pd.to_numeric(t[ecol], errors="coerce").notna().any():
        why = f" (no {html.escape(qcol)}: too few samples to test)" if qcol else ""
        return by_evidence(t, qcol, ecol), f"by the largest |{html.escape(ecol)}|{why}"
    return t, ""


def _cohort_section(paths: list[str], captions: dict[str, str]) -> str:
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        if p.suffix.lower() == ".png":
            out.append(figure(p, p.stem, caption_html(captions.get(p.stem, "")) or
                              html.escape(f"Cohort comparison ({p.name})")))
        elif p.suffix.lower() in (".tsv", ".csv", ".txt"):
            t = pd.read_csv(p, sep="\t" if p.suffix.lower() != ".csv" else ",")
            t, order = _cohort_order(t)
            tid = f"cohort-{p.stem}"
            shown = f"; the first 200 {order}" if order and len(t) > 200 else ""
            out.append(f"<h3>{html.escape(p.name)}</h3><p class='muted'>{len(t):,} rows{shown}"
                       f".</p>{filter_box(tid)}{table_html(t.head(200), table_id=tid)}")
    return "".join(out)


def build_summary(
    *,
    title: str,
    config: dict,
    samples_info: dict[str, dict],
    models: list[str],
    reference_model: str,
    tree: ResultsTree,
    aggregate: dict[str, str | Path],
    sample_figures: dict[str, dict[str, str | Path]] | None = None,
    captions: dict[str, str] | None = None,
    checksums: list[str | Path] = (),
    cohort: list[str | Path] = (),
    params: dict | None = None,
    bench_dir: str | Path = "results/benchmarks",
    out_path: str | Path,
) -> None:
    """Write the summary page.

    ``aggregate``: outputs of :func:`~spatialfuse.report.aggregate.run_aggregate` (metrics,
    spots, links, pathways and the figure keys of :data:`COHORT_FIGURES`);
    ``sample_figures``: caption name (``align_overlay``, ``impute``, ``associations``,
    ``ingest_qc``) → sample → PNG; ``captions``: caption name → reStructuredText;
    ``checksums``: per-sample SHA-256 tables; ``cohort``: outputs of an optional cohort
    comparison (tables and PNGs), shown when present.
    """
    params, captions, sample_figures = params or {}, captions or {}, sample_figures or {}
    samples = list(samples_info)
    seed = int(config.get("seed", 0) or 0)
    conditions = {s: str(samples_info[s].get("condition") or "") for s in samples}
    batches = {s: str(samples_info[s].get("batch") or "") for s in samples}
    metrics = pd.read_csv(aggregate["metrics"], sep="\t").fillna({"model": ""})
    spots = pd.read_csv(aggregate["spots"], sep="\t")
    qc = {s: read_json(tree.path("align_qc", s)) for s in samples}
    ingest = {s: read_json(tree.path("ingest_qc", s)) for s in samples}
    interp = {s: read_json(tree.path("interpret_summary", s)) for s in samples}
    impute = {s: read_json(tree.path("impute_metrics", s)) for s in samples}
    flags = collect_flags(tree, samples, models)
    version = provenance.git_version()
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")

    nav = [("attention", "Attention"), ("answer", "Results"), ("cohort", "Cohort"),
           *[(a, h) for a, h, _ in COHORT_FIGURES], ("ingest", "Ingest QC"),
           ("tables", "Tables"), ("provenance", "Provenance")]
    has_cohort = any(Path(p).exists() for p in cohort)
    if not has_cohort:
        nav = [n for n in nav if n[0] != "cohort"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{html.escape(title)}</title><style>{CSS}{palette_css()}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>{len(samples)} sample(s) · "
        f"{len(models)} model(s): {html.escape(', '.join(models))} · generated {now} · "
        f"SpatialFuse {html.escape(version['describe'])}</p></header>",
        "<nav>" + "".join(f"<a href='#{a}'>{html.escape(h)}</a>" for a, h in nav) + "</nav><main>",
    ]

    # 1. what needs attention, first
    if len(flags):
        items = "".join(
            f"<li><a href='#sample-{html.escape(f.sample)}'><b>{html.escape(f.sample)}</b></a> · "
            f"{html.escape(f.stage)}{' (' + html.escape(f.model) + ')' if f.model else ''}: "
            f"{html.escape(f.message)}</li>" for f in flags.itertuples())
        parts.append(f"<div class='flag' id='attention'><h2>Needs attention "
                     f"({flags['sample'].nunique()} of {len(samples)} samples)</h2>"
                     f"<ul>{items}</ul><p class='muted'>Results of flagged steps are shown below "
                     f"but should be checked before they are used.</p></div>")
    else:
        parts.append(f"<div class='ok' id='attention'>All {len(samples)} samples passed every "
                     f"stage's checks (registration overlap and coverage, and any other "
                     f"warnings a stage raises).</div>")

    # 2. the answer: per-sample cards, then the at-a-glance table
    has_truth = "truth" in spots and spots["truth"].notna().any()
    layers = (["truth"] if has_truth else []) + [m for m in models if m in spots]
    default = reference_model if reference_model in layers else (layers[-1] if layers else "")
    parts.append("<h2 id='answer'>Results per sample</h2><p class='muted'>Spatial domains of each "
                 f"section (model <b>{html.escape(default)}</b>; switch with the buttons, hover a "
                 "spot for its barcode and the domain under every model), registration quality "
                 "and the strongest metabolite–gene links. Domain numbers and colours are matched "
                 "across models (and to the truth when known).</p><div class='cards'>")
    for s in samples:
        parts.append(_card(s, conditions[s], qc[s], ingest[s], interp[s], metrics, flags, spots,
                           layers, default, params, seed, impute[s]))
    parts.append("</div><h3>At a glance</h3>"
                 + table_html(_glance(samples, conditions, qc, interp, metrics, flags, batches),
                              table_id="glance"))

    # 3. optional cohort comparison (interpret stage), then the cohort figures
    if has_cohort:
        parts.append("<h2 id='cohort'>Cohort comparison</h2>"
                     + _cohort_section([str(p) for p in cohort], captions))
    per_section: dict[str, list[str]] = {}
    for anchor, cap, label in SAMPLE_FIGURES:
        figs = sample_figures.get(cap, {})
        blocks = "".join(figure(figs[s], f"{s}: {label}", "") for s in samples if s in figs)
        if blocks:
            per_section.setdefault(anchor, []).append(
                f"<details><summary>{html.escape(label.capitalize())}, per sample</summary>"
                f"<p class='muted'>{caption_html(captions.get(cap, ''))}</p>{blocks}</details>")
    for anchor, heading, figs in COHORT_FIGURES:
        parts.append(f"<h2 id='{anchor}'>{html.escape(heading)}</h2>")
        for key, cap in figs:
            if key in aggregate:
                parts.append(figure(aggregate[key], f"{heading}: {cap}",
                                    caption_html(captions.get(cap, "")), f"fig-{key}"))
        parts += per_section.pop(anchor, [])
    parts.append("<h2 id='ingest'>Ingest QC</h2><p class='muted'>What was read and what the QC "
                 "filters kept, per sample (settings: <code>ingest</code> in the config).</p>"
                 + table_html(ingest_numbers(samples, ingest), table_id="ingest-numbers")
                 + "".join(per_section.pop("ingest", [])))

    # 4. tables
    parts.append("<h2 id='tables'>Tables</h2>")
    if "prediction" in aggregate and Path(aggregate["prediction"]).exists():
        pv = pd.read_csv(aggregate["prediction"], sep="\t")
        if len(pv):
            parts.append(f"<h3>Held-out prediction across samples</h3>"
                         f"<p class='muted'>{caption_html(captions.get('prediction_table', ''))}"
                         "</p>" + table_html(pv, table_id="prediction", formats={
                             **{c: "{:+.3f}" for c in ("difference", "ci95_low", "ci95_high")},
                             **{c: "{:.3f}" for c in ("median_method", "median_comparator")}}))
    if "links" in aggregate and Path(aggregate["links"]).exists():
        links = pd.read_csv(aggregate["links"], sep="\t")
        parts.append("<h3>Strongest metabolite–gene links across samples</h3>"
                     f"<p class='muted'>{caption_html(captions.get('links_table', ''))}</p>"
                     + filter_box("links")
                     + table_html(links.drop(columns=["label"], errors="ignore"), table_id="links",
                                  css_class="links", formats={"mz": "{:.4f}"}))
    for s in samples:
        top = pd.DataFrame(interp[s].get("top_associations") or [])
        if len(top):
            parts.append(f"<details><summary>{html.escape(s)}: top associations</summary>"
                         f"{table_html(top)}</details>")
        mk = pd.DataFrame(interp[s].get("top_markers") or [])
        if len(mk):
            parts.append(f"<details><summary>{html.escape(s)}: domain markers (best 3 per "
                         f"domain and modality; all in interpret/markers.tsv)</summary>"
                         f"{table_html(mk, table_id=f'markers-{s}')}</details>")
    if "pathways" in aggregate and Path(aggregate["pathways"]).exists():
        pw = pd.read_csv(aggregate["pathways"], sep="\t")
        if len(pw):
            parts.append("<h3>Pathway enrichment</h3>"
                         f"<p class='muted'>{caption_html(captions.get('pathways_table', ''))}</p>"
                         + filter_box("pathways") + table_html(pw, table_id="pathways"))
    parts.append(_models_benchmark(bench_dir))
    wide = metrics.pivot_table(index=["stage", "model", "metric"], columns="sample",
                               values="value", aggfunc="first", sort=False).reset_index()
    wide = wide[["stage", "model", "metric"] + [s for s in samples if s in wide.columns]]
    parts.append(f"<h3>All metrics</h3><details><summary>{len(wide):,} metrics × {len(samples)} "
                 "samples (metrics.tsv, one column per sample)</summary><p class='muted'>Click a "
                 "header to sort, type to filter.</p>"
                 + filter_box("metrics", "metrics (e.g. align, ari, error)")
                 + table_html(wide, table_id="metrics") + "</details>")

    # 5. provenance
    parts.append(_provenance(config, samples_info, version, checksums, bench_dir))
    parts.append(f"</main><script>{JS}</script></body></html>")
    Path(out_path).write_text("\n".join(parts), encoding="utf-8")
    log.info("report: %d samples, %d flags -> %s", len(samples), len(flags), out_path)


#: Written by ``benchmarks/models_benchmark.py`` (its ``--out``) into the run's benchmark folder
MODELS_BENCHMARK = "models_benchmark.tsv"


def _models_benchmark(bench_dir) -> str:
    """The joint-model benchmark table (ours vs published peers), when one was run on these
    results; empty otherwise."""
    f = Path(bench_dir) / MODELS_BENCHMARK
    if not f.exists():
        return ""
    try:
        t = pd.read_csv(f, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return ""
    return ("<h3>Joint models against published peers (benchmark)</h3><p class='muted'>"
            "From <code>benchmarks/models_benchmark.py</code> (" + html.escape(f.name)
            + "): every method's embedding clustered the same way (k-means, no refinement) and "
            "scored against the known domains; ARI and NMI (1 = perfect), spatial continuity "
            "(neighbour agreement), wall time and peak memory of the fit.</p>"
            + filter_box("models-benchmark")
            + table_html(t, table_id="models-benchmark"))


def _provenance(config, samples_info, version, checksums, bench_dir) -> str:
    parts = ["<h2 id='provenance'>Provenance</h2>"]
    vers = provenance.package_versions()
    commit = f" (commit {html.escape(version['commit'])})" if version["commit"] else ""
    versions = pd.DataFrame(sorted(vers.items()), columns=["package", "version"])
    parts.append("<h3>Pipeline and packages</h3><dl class='kv'>"
                 f"<dt>SpatialFuse</dt><dd>{html.escape(version['describe'])}{commit}</dd></dl>"
                 + table_html(versions, sortable=False))
    parts.append("<details><summary>Every installed Python package</summary>"
                 + table_html(provenance.all_distributions()) + "</details>")
    sd = provenance.seeds(config)
    parts.append("<h3>Seeds and device</h3><pre>" + html.escape(json.dumps(sd, indent=1))
                 + f"\ndevice: {html.escape(str(config.get('device')))}</pre>")
    parts.append("<h3>Configuration (after defaults)</h3><details><summary>config.yaml as run"
                 "</summary><pre>" + html.escape(yaml.safe_dump(config, sort_keys=False))
                 + "</pre></details>")
    parts.append("<h3>Samples sheet</h3>" + table_html(
        pd.DataFrame.from_dict(samples_info, orient="index").reset_index(drop=True),
        sortable=False))
    cs = [pd.read_csv(p, sep="\t") for p in checksums if Path(p).exists()]
    if cs:
        cs = pd.concat(cs, ignore_index=True)
        parts.append(f"<h3>Input checksums (SHA-256)</h3><details><summary>{len(cs)} input files"
                     f", {cs['bytes'].sum() / 1e6:,.1f} MB</summary>"
                     + filter_box("checksums", "files")
                     + table_html(cs, table_id="checksums") + "</details>")
    rt = provenance.rule_runtimes(bench_dir)
    if len(rt):
        per_rule = (rt.groupby("rule", sort=False)
                    .agg(jobs=("job", "size"), seconds_total=("seconds", "sum"),
                         seconds_max=("seconds", "max"), max_rss_mb=("max_rss_mb", "max"))
                    .reset_index().sort_values("seconds_total", ascending=False))
        parts.append(f"<h3>Run time per rule</h3><p class='muted'>{rt['seconds'].sum():,.0f} s of "
                     f"job time in {len(rt)} jobs (from the rules' benchmark tables; jobs run in "
                     f"parallel, so the wall time is shorter).</p>" + table_html(per_rule)
                     + "<details><summary>per job</summary>" + table_html(rt) + "</details>")
    return "".join(parts)
