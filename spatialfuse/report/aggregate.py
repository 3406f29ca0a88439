"""Stage 7: gather every sample's results into cohort tables and figures.

Reads the per-sample outputs named in DESIGN.md (through :class:`ResultsTree`), writes one long
metrics table, the matched domain labels of every spot, the cohort's strongest metabolite–gene
links and pathways, and the cohort figures of :mod:`.figures`. Optional inputs (truth,
landmarks, conditions, training curves, pathways) are used when present and never required.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from ..plots import aligned_pixel_corners, spot_geometry
from ..ingest import truth_domains
from . import figures
from .domains import harmonise_domains
from .latent import sample_umaps

log = logging.getLogger(__name__)


#: The genes → metabolites task of ``feature_scores.tsv`` and its methods' name suffix.
CROSS_TASK, CROSS_SUFFIX = figures.PREDICTION_TASKS[0][0], "_from_rna"

#: Per-sample outputs this stage and the report read (the contract in DESIGN.md)
LAYOUT = {
    "ingest_qc": "{sample}/ingest/qc.json",
    "st": "{sample}/ingest/st.h5ad",
    "align_qc": "{sample}/align/qc.json",
    "msi_aligned": "{sample}/align/msi_aligned.h5ad",
    "paired": "{sample}/align/paired.h5mu",
    "impute_metrics": "{sample}/impute/metrics.json",
    "feature_scores": "{sample}/impute/feature_scores.tsv",
    "imputed": "{sample}/impute/imputed.h5mu",
    "model_metrics": "{sample}/model/{model}/metrics.json",
    "train_log": "{sample}/model/{model}/train_log.tsv",
    "embedding": "{sample}/model/{model}/embedding.h5ad",
    "domains": "{sample}/domains/{model}.tsv",
    "domain_metrics": "{sample}/domains/{model}_metrics.json",
    "interpret_summary": "{sample}/interpret/summary.json",
    "associations": "{sample}/interpret/associations.tsv",
    "pathways": "{sample}/interpret/pathways.tsv",
}


@dataclass(frozen=True)
class ResultsTree:
    """Paths of the per-sample outputs under ``root``: ``tree.path("align_qc", "s1")``."""

    root: Path = Path("results")

    def path(self, name: str, sample: str, model: str = "") -> Path:
        return Path(self.root) / LAYOUT[name].format(sample=sample, model=model)

    def stage_jsons(self, s: str, models: list[str]) -> list[tuple[str, str, Path]]:
        """(stage, model, path) of every per-stage JSON of a sample, in pipeline order."""
        out = [("ingest", "", self.path("ingest_qc", s)), ("align", "", self.path("align_qc", s)),
               ("impute", "", self.path("impute_metrics", s))]
        out += [("model", m, self.path("model_metrics", s, m)) for m in models]
        out += [("domains", m, self.path("domain_metrics", s, m)) for m in models]
        out += [("interpret", "", self.path("interpret_summary", s))]
        return out


def read_json(path) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (bool, np.bool_)):
            out[key] = float(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[key] = float(v)
    return out


def collect_metrics(tree: ResultsTree, samples: list[str], models: list[str]) -> pd.DataFrame:
    """Long table (sample, stage, model, metric, value) of every numeric value (booleans as
    0/1, nested keys dotted) of every per-stage JSON; text and lists are left out, so a stage
    may add keys freely."""
    rows = []
    for s in samples:
        for stage, model, path in tree.stage_jsons(s, models):
            for k, v in _flatten(read_json(path)).items():
                rows.append((s, stage, model, k, v))
    return pd.DataFrame(rows, columns=["sample", "stage", "model", "metric", "value"])


def collect_flags(tree: ResultsTree, samples: list[str], models: list[str]) -> pd.DataFrame:
    """Everything a stage asked a human to look at: its ``warnings`` (a list, or one string)
    and ``flagged: true``. Returns sample, stage, model, message."""
    rows = []
    for s in samples:
        for stage, model, path in tree.stage_jsons(s, models):
            q = read_json(path)
            w = q.get("warnings") or []
            w = [w] if isinstance(w, str) else list(w)
            rows += [(s, stage, model, str(x)) for x in w]
            if q.get("flagged") and not w:
                rows.append((s, stage, model, "flagged by the stage (see its log)"))
    return pd.DataFrame(rows, columns=["sample", "stage", "model", "message"])


# ---------------------------------------------------------------- loading helpers

def _read_obsm(path, keys: list[str]) -> tuple[np.ndarray, dict]:
    import anndata as ad

    a = ad.read_h5ad(path, backed="r")
    try:
        return np.asarray(a.obs_names), {k: np.asarray(a.obsm[k]) for k in keys if k in a.obsm}
    finally:
        a.file.close()


def read_truth(truth_dir, barcodes) -> pd.Series | None:
    """True domain of each of ``barcodes`` that the truth folder knows (or None without one)."""
    t = truth_domains(truth_dir, barcodes)
    return None if t is None else t.dropna().astype(int)


def read_labels(path) -> pd.Series:
    d = pd.read_csv(path, sep="\t", index_col=0)
    return d["domain"] if "domain" in d else d.iloc[:, 0]


def _rna_profile_input(path):
    import mudata as md

    rna = md.read_h5ad(str(path), Key.mod.rna)
    return rna.X, np.asarray(rna.obs_names), np.asarray(rna.var_names)


def _first_name(annotation, mz) -> str:
    a = str(annotation) if isinstance(annotation, str) else ""
    name = a.split(";")[0].rsplit(" [", 1)[0].strip()
    return name or (f"m/z {float(mz):.4f}" if pd.notna(mz) else "?")


def _read_assoc(path) -> pd.DataFrame:
    cols = ["metabolite_feature", "mz", "annotation", "gene", "r", "qval"]
    a = pd.read_csv(path, sep="\t", usecols=lambda c: c in cols)
    for c in cols:
        if c not in a:
            a[c] = np.nan
    a["metabolite"] = [_first_name(x, m) for x, m in zip(a["annotation"], a["mz"])]
    a["key"] = a["metabolite"] + " ~ " + a["gene"].astype(str)
    return a.sort_values(["qval", "r"], key=lambda c: c if c.name == "qval" else -c.abs())


def top_links(paths: dict[str, Path], n: int = 30, per_sample: int = 200,
              fdr: float = 0.05) -> pd.DataFrame:
    """The cohort's strongest metabolite–gene links among each sample's ``per_sample`` best:
    significant (q ≤ fdr) in most samples first, then best q, then |r|. Pairs are keyed by
    metabolite name (first candidate, else m/z) and gene, so that samples with slightly
    different m/z bins line up. Columns: label, metabolite, gene, mz, annotation,
    n_samples_significant, then ``r:<sample>`` and ``q:<sample>`` (NaN: not measured there)."""
    cand = []
    for s, p in paths.items():
        if Path(p).exists():
            a = _read_assoc(p).drop_duplicates("key").head(per_sample)
            cand.append(a.assign(sample=s))
    if not cand:
        return pd.DataFrame(columns=["label", "metabolite", "gene", "mz", "annotation"])
    cand = pd.concat(cand, ignore_index=True)
    cand["absr"] = cand["r"].abs()
    cand["sig"] = cand["qval"] <= fdr
    n_sig = cand.groupby("key")["sig"].sum()
    best = (cand.assign(n_sig=cand["key"].map(n_sig))
            .sort_values(["n_sig", "qval", "absr"], ascending=[False, True, False])
            .drop_duplicates("key").head(n))
    out = best[["key", "metabolite", "gene", "mz", "annotation"]].set_index("key")
    for s, p in paths.items():
        a = _read_assoc(p).drop_duplicates("key").set_index("key") if Path(p).exists() else None
        out[f"r:{s}"] = a["r"].reindex(out.index) if a is not None else np.nan
        out[f"q:{s}"] = a["qval"].reindex(out.index) if a is not None else np.nan
    qs = out[[f"q:{s}" for s in paths]]
    out.insert(4, "n_samples_significant", (qs <= fdr).sum(1).astype(int))
    out.insert(0, "label", out.index)
    return out.reset_index(drop=True)


def cohort_pathways(paths: dict[str, Path], fdr: float, per_query: int = 5) -> pd.DataFrame:
    """Pathway enrichment of every sample: all rows with q ≤ fdr plus the best few per
    sample and query (domain), so weak but top-ranked pathways still show."""
    parts = []
    for s, p in paths.items():
        if Path(p).exists():
            t = pd.read_csv(p, sep="\t")
            if len(t) and {"qval", "query", "pathway_name"} <= set(t.columns):
                keep = (t["qval"] <= fdr) | t.groupby("query")["qval"].rank(method="first") \
                    .le(per_query)
                parts.append(t[keep].assign(sample=s))
    if not parts:
        return pd.DataFrame(columns=["sample", "query", "pathway_name", "overlap", "qval"])
    out = pd.concat(parts, ignore_index=True)
    return out[["sample"] + [c for c in out.columns if c != "sample"]].sort_values("qval")


def imputation_pairs(tree: ResultsTree, s: str, max_points: int = 200_000, seed: int = 0):
    """Measured vs held-out predicted metabolite values of one sample, z-scored with each
    metabolite's measured mean and SD (so shrunken predictions show as a flatter cloud), for the
    genes → metabolites method with the best median held-out r (the denoising methods, which
    read the metabolites themselves, are not candidates)."""
    scores = pd.read_csv(tree.path("feature_scores", s), sep="\t")
    if not tree.path("imputed", s).exists() or scores.empty:
        return None, scores
    import mudata as md

    msi = md.read_h5ad(str(tree.path("imputed", s)), Key.mod.msi)
    on_msi = scores[scores["modality"] == Key.mod.msi]
    cross_rows = on_msi[on_msi["task"] == CROSS_TASK]
    cross = [m for m in dict.fromkeys(cross_rows["method"]) if Key.layers.imputed(m) in msi.layers]
    if not cross:
        return None, scores
    # the best median held-out r (ties: the first listed)
    med = {m: cross_rows.loc[cross_rows["method"] == m, "pearson_r"].median() for m in cross}
    method = max(cross, key=lambda m: np.nan_to_num(med[m], nan=-np.inf))
    X = msi.X.toarray() if sp.issparse(msi.X) else np.asarray(msi.X, float)
    P = msi.layers[Key.layers.imputed(method)]
    P = P.toarray() if sp.issparse(P) else np.asarray(P, float)
    mu, sd = X.mean(0), X.std(0)
    sd[sd == 0] = np.nan
    Zm, Zp = ((X - mu) / sd).ravel(), ((P - mu) / sd).ravel()
    if Zm.size > max_points:
        idx = np.random.default_rng(seed).choice(Zm.size, max_points, replace=False)
        Zm, Zp = Zm[idx], Zp[idx]
    name = method.removesuffix(CROSS_SUFFIX)
    return {"measured": Zm, "predicted": Zp, "method": f"genes → metabolites by {name}",
            "median_r": float(med[method])}, scores


# ---------------------------------------------------------------- the stage

def run_aggregate(
    tree: ResultsTree,
    samples: list[str],
    models: list[str],
    outputs: dict[str, str | Path],
    *,
    truth: dict[str, str] | None = None,
    conditions: dict[str, str] | None = None,
    reference_model: str | None = None,
    params: dict | None = None,
    fdr: float = 0.05,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Write every cohort table and figure named in ``outputs`` (keys: metrics, spots,
    matching, links, pathways, optionally prediction (the impute verdicts pooled over the
    samples, :func:`~spatialfuse.impute.pooled.pooled_verdicts`) and the figure names of
    :mod:`.figures`)."""
    params = params or {}
    truth, conditions = truth or {}, conditions or {}
    reference_model = reference_model if reference_model in models else models[0]
    for p in outputs.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)

    metrics = collect_metrics(tree, samples, models)
    metrics.to_csv(outputs["metrics"], sep="\t", index=False)
    qc = {s: read_json(tree.path("align_qc", s)) for s in samples}
    ingest = {s: read_json(tree.path("ingest_qc", s)) for s in samples}
    geometry = {s: spot_geometry(ingest[s].get("st_meta")) for s in samples}
    diam = {s: g[0] for s, g in geometry.items()}
    square = {s: g[1] for s, g in geometry.items()}

    # domains: matched labels of every spot, every model
    coords, labels, truths, emb = {}, {}, {}, {}
    for s in samples:
        bc, obsm = _read_obsm(tree.path("embedding", s, models[0]), [Key.obsm.spatial])
        coords[s] = pd.DataFrame(obsm[Key.obsm.spatial][:, :2], index=bc, columns=["x_um", "y_um"])
        labels[s] = {m: read_labels(tree.path("domains", s, m)) for m in models}
        truths[s] = read_truth(truth.get(s), bc)
    need_profiles = len(samples) > 1 and any(truths[s] is None for s in samples)
    profiles = ({s: _rna_profile_input(tree.path("paired", s)) for s in samples}
                if need_profiles else None)
    matched, matching = harmonise_domains(labels, truths, reference_model, profiles)
    spots = []
    for s in samples:
        t = coords[s].copy()
        for m, lab in matched[s].items():
            t[m] = lab.reindex(t.index).astype("Int64")
        t.insert(0, "barcode", t.index)
        t.insert(0, "sample", s)
        spots.append(t.reset_index(drop=True))
    spots = pd.concat(spots, ignore_index=True)
    spots.to_csv(outputs["spots"], sep="\t", index=False)
    matching.to_csv(outputs["matching"], sep="\t", index=False)
    figures.domains_figure(spots, samples, models, metrics, outputs["domains_figure"], diam,
                           conditions, square)
    figures.composition_figure(spots, reference_model, conditions, outputs["composition_figure"])

    # registration
    overlays = {}
    rng = np.random.default_rng(seed)
    for s in samples:
        _, st = _read_obsm(tree.path("st", s), [Key.obsm.spatial])
        import anndata as ad

        a = ad.read_h5ad(tree.path("msi_aligned", s), backed="r")
        try:
            on = a.obs[Key.obs.on_tissue].to_numpy(bool) if Key.obs.on_tissue in a.obs else \
                np.ones(a.n_obs, bool)
            mxy = np.asarray(a.obsm[Key.obsm.spatial])[on]
            native = np.asarray(a.obsm[Key.obsm.spatial_native])[on] \
                if Key.obsm.spatial_native in a.obsm else None
        finally:
            a.file.close()
        corners = aligned_pixel_corners(qc[s], native, mxy)
        if len(mxy) > 30000:
            mxy = mxy[rng.choice(len(mxy), 30000, replace=False)]
        overlays[s] = {"st_xy": st[Key.obsm.spatial][:, :2], "msi_xy": mxy[:, :2],
                       "spot_diameter_um": diam[s], "pixel_corners_um": corners,
                       "square_spots": square[s]}
    figures.registration_figure(overlays, qc, outputs["registration_figure"])

    # models: training curves and each sample's UMAP of each model's embedding
    logs = {}
    for s in samples:
        for m in models:
            if tree.path("train_log", s, m).exists():
                try:
                    logs[(s, m)] = pd.read_csv(tree.path("train_log", s, m), sep="\t")
                except pd.errors.EmptyDataError:
                    pass
    figures.training_figure(logs, outputs["training_figure"])
    um = []
    for m in models:
        for s in samples:
            bc, obsm = _read_obsm(tree.path("embedding", s, m), [Key.obsm.embedding(m)])
            if Key.obsm.embedding(m) in obsm:
                emb[s] = (bc, obsm[Key.obsm.embedding(m)])
        u = sample_umaps(emb, seed=seed, max_spots=int(params.get("umap_max_spots", 20000)))
        emb.clear()
        if len(u):
            dom = spots.set_index(["sample", "barcode"])[m]
            u["domain"] = dom.reindex(pd.MultiIndex.from_frame(u[["sample", "barcode"]])).to_numpy()
            um.append(u.assign(model=m))
    figures.umap_figure(pd.concat(um, ignore_index=True) if um else pd.DataFrame(), models,
                        outputs["umap_figure"])

    # imputation
    pairs, scores = {}, []
    for s in samples:
        p, sc = imputation_pairs(tree, s, seed=seed)
        if p is not None:
            pairs[s] = p
        scores.append(sc.assign(sample=s))
    figures.imputation_figure(pairs, pd.concat(scores, ignore_index=True) if scores else
                              pd.DataFrame(), outputs["imputation_figure"])
    if "prediction" in outputs:  # the samples' verdicts pooled: a study-level answer
        from ..impute.pooled import pooled_verdicts

        verdicts = pooled_verdicts({s: read_json(tree.path("impute_metrics", s)) for s in samples},
                                   {s: sc for s, sc in zip(samples, scores)}, seed=seed)
        verdicts.to_csv(outputs["prediction"], sep="\t", index=False)

    # biology
    links = top_links({s: tree.path("associations", s) for s in samples},
                      n=int(params.get("top_links", 30)), fdr=fdr)
    links.to_csv(outputs["links"], sep="\t", index=False)
    figures.association_figure(links, samples, outputs["associations_figure"], fdr)
    pw = cohort_pathways({s: tree.path("pathways", s) for s in samples}, fdr)
    pw.to_csv(outputs["pathways"], sep="\t", index=False)
    figures.pathway_figure(pw, outputs["pathways_figure"], fdr)

    figures.metrics_figure(metrics, outputs["metrics_figure"])
    log.info("aggregate: %d samples × %d models, %d metric rows, %d links, %d pathway rows",
             len(samples), len(models), len(metrics), len(links), len(pw))
    return {"metrics": metrics, "spots": spots, "matching": matching, "links": links,
            "pathways": pw}
