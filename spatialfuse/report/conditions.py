"""Cohort level: per-domain differences between conditions, with samples as the replicates.

Spots of one section are not independent replicates of a condition: a test over spots would
call every difference between two sections significant. Here each sample contributes one
number per (domain, feature) — the mean over its spots in that domain (a pseudo-bulk profile
on the log scale of X) — and one number per domain — the share of its spots in the domain —
and conditions are compared over samples (Student's t on those per-sample values, BH FDR per
contrast and modality). With fewer than two samples in a condition the effect is still
reported, the test is not (p = NaN, ``note`` says why).

With the samples sheet's ``batch`` column naming two or more batches among a contrast's
samples, each feature is instead regressed on the condition and the batch (ordinary least
squares over the samples: an intercept, the condition, one indicator per further batch), and
the effect, t and p are those of the condition's coefficient, i.e. the difference between
conditions *within* batches. One batch gives exactly Student's t. A condition confounded with
the batch (no batch holds both conditions) cannot be told from it: effect only, unadjusted,
and ``note`` says so. The batches are those of the samples that have the domain, so in a
cohort where a domain is missing from some sections its rows can be adjusted or not
independently of the other domains' (``note`` says which). ``mean_a``/``mean_b`` stay the raw
condition means; in an adjusted row ``log2fc`` is the within-batch difference.

Domains are the cohort-matched labels of the aggregate stage (``results/aggregate/
domains.tsv``), so "domain 2" is the same tissue region in every sample. Metabolites are
matched across samples by their annotation (every candidate, as written by ingest) or, when
unannotated, by m/z within ``mz_tol_ppm``.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ..constants import Key
from ..metrics import bh_fdr

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ["contrast", "domain", "modality", "feature", "annotation", "n_a", "n_b",
                   "mean_a", "mean_b", "log2fc", "t", "pval", "qval", "note"]
ABUNDANCE_COLUMNS = ["contrast", "domain", "n_a", "n_b", "fraction_a", "fraction_b",
                     "difference", "t", "pval", "qval", "note"]


def _metabolite_keys(msi: ad.AnnData, reference_mz: np.ndarray, mz_tol_ppm: float) -> np.ndarray:
    """Cohort key of each m/z feature: its annotation if any, else the reference m/z within
    tolerance (or its own m/z, rounded, when it matches none)."""
    mz = msi.var[Key.var.mz].to_numpy(float) if Key.var.mz in msi.var else \
        np.full(msi.n_vars, np.nan)
    ann = msi.var[Key.var.annotation].fillna("").astype(str).to_numpy() \
        if Key.var.annotation in msi.var else np.array([""] * msi.n_vars)
    keys = []
    ref = np.sort(reference_mz[np.isfinite(reference_mz)])
    for a, m in zip(ann, mz):
        if a and a != "nan":
            keys.append(a)
        elif np.isfinite(m) and len(ref):
            j = np.clip(np.searchsorted(ref, m), 1, len(ref) - 1)
            near = ref[j - 1:j + 1][np.argmin(np.abs(ref[j - 1:j + 1] - m))]
            keys.append(f"m/z {near:.4f}" if abs(near - m) / m * 1e6 <= mz_tol_ppm
                        else f"m/z {m:.4f}")
        else:
            keys.append(str(m))
    return np.array(keys, dtype=object)


def _mz_clusters(mz: np.ndarray, tol_ppm: float) -> np.ndarray:
    """One representative (the lowest) m/z per run of m/z values closer than ``tol_ppm``
    to their neighbour, so slightly shifted bins of different samples share one key."""
    mz = np.sort(mz[np.isfinite(mz)])
    if not len(mz):
        return mz
    new = np.r_[True, np.diff(mz) / mz[1:] * 1e6 > tol_ppm]
    return mz[new]


def pseudobulk(a: ad.AnnData, labels: pd.Series, keys: np.ndarray,
               min_spots: int = 10) -> pd.DataFrame:
    """Mean of X over each domain's spots (domains with ≥ ``min_spots`` spots): a
    domains × features frame with feature columns named by ``keys`` (duplicated keys are
    averaged)."""
    lab = labels.reindex(a.obs_names)
    ok = lab.notna().to_numpy()
    codes, doms = pd.factorize(lab[ok].astype(int), sort=True)
    X = a.X[ok]
    ind = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                        shape=(len(doms), len(codes)))
    size = np.asarray(ind.sum(1)).ravel()
    sums = ind @ X
    means = (sums.toarray() if sp.issparse(sums) else np.asarray(sums)) / size[:, None]
    df = pd.DataFrame(means, index=pd.Index(doms, name="domain"), columns=keys)
    df = df.T.groupby(level=0, sort=False).mean().T
    return df[size >= min_spots]


def _t_test(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Student's t (pooled variance) of the columns of a (n_a × F) vs b (n_b × F)."""
    na, nb = len(a), len(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        sp2 = ((na - 1) * a.var(0, ddof=1) + (nb - 1) * b.var(0, ddof=1)) / (na + nb - 2)
        t = (a.mean(0) - b.mean(0)) / np.sqrt(sp2 * (1 / na + 1 / nb))
    p = 2 * stats.t.sf(np.abs(t), na + nb - 2)
    return t, np.where(np.isfinite(t), p, np.nan)


NOTE_FEW = "needs ≥ 2 samples per condition: effect only"
NOTE_CONFOUNDED = "condition confounded with batch (no batch holds both): effect only, not adjusted"
#: ``note`` of a row whose effect, t and p are the condition's given the batch.
NOTE_ADJUSTED = "adjusted for batch"


def _ols_condition(Y: np.ndarray, is_a: np.ndarray, Z: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS of each column of ``Y`` (samples × F) on an intercept, the condition indicator
    ``is_a`` and the covariates ``Z`` (samples × k, full rank with the other two): the
    condition's coefficient, its t and two-sided p on n − 2 − k degrees of freedom. A column
    the design fits exactly (no residual variance) gets NaN t and p, as Student's t does.
    Without covariates this *is* Student's t with pooled variance."""
    n = len(Y)
    X = np.column_stack([np.ones(n), is_a.astype(float), Z])
    df = n - X.shape[1]
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    rss = ((Y - X @ beta) ** 2).sum(0)
    c11 = np.linalg.inv(X.T @ X)[1, 1]
    scale = np.maximum((Y ** 2).sum(0), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(rss > 1e-20 * scale, beta[1] / np.sqrt(rss / df * c11), np.nan)
    p = 2 * stats.t.sf(np.abs(t), df)
    return beta[1], t, np.where(np.isfinite(t), p, np.nan)


def _condition_test(A: np.ndarray, B: np.ndarray, batch_a=None, batch_b=None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Condition a (n_a × F) against b (n_b × F), column by column: (effect, t, p, note).

    Without batches (``batch_a``/``batch_b`` None, or one batch among these samples): the
    difference of the means and Student's t. With two or more: :func:`_ols_condition` with an
    indicator per batch beyond the first, so the effect is the difference within batches.
    Untestable designs give NaN t and p with the reason in ``note``: fewer than two samples in
    a condition, the condition confounded with the batch (no batch holds both conditions), or
    no degrees of freedom left."""
    F = A.shape[1]
    diff = A.mean(0) - B.mean(0)
    nan = np.full(F, np.nan)
    if len(A) < 2 or len(B) < 2:
        return diff, nan, nan, NOTE_FEW
    batches = (None if batch_a is None or batch_b is None
               else np.asarray([*batch_a, *batch_b], dtype=object))
    levels = [] if batches is None else list(dict.fromkeys(batches))
    if len(levels) < 2:
        t, p = _t_test(A, B)
        return diff, t, p, ""
    is_a = np.r_[np.ones(len(A), bool), np.zeros(len(B), bool)]
    if not any(is_a[batches == lev].any() and (~is_a[batches == lev]).any() for lev in levels):
        return diff, nan, nan, NOTE_CONFOUNDED
    # a batch holding both conditions makes the design full rank (the condition is then not
    # a sum of batch indicators); what can still be missing is a residual degree of freedom
    Z = np.column_stack([(batches == lev).astype(float) for lev in levels[1:]])
    if len(is_a) - 2 - Z.shape[1] < 1:
        return diff, nan, nan, (f"too few samples to adjust for {len(levels)} batches: "
                                "effect only")
    effect, t, p = _ols_condition(np.vstack([A, B]), is_a, Z)
    return effect, t, p, f"{NOTE_ADJUSTED} ({len(levels)} batches)"


def _batch_labels(batches: dict[str, str] | None, sa: list[str], sb: list[str]):
    """The batch labels of samples ``sa`` and ``sb``: (None, None) when none of them has one;
    samples without a batch (empty or missing) then form one batch of their own, ``""``."""
    def label(s):
        b = (batches or {}).get(s)
        return "" if b is None or (isinstance(b, float) and np.isnan(b)) else str(b)

    lab = {s: label(s) for s in (*sa, *sb)}
    if not any(lab.values()):
        return None, None
    return [lab[s] for s in sa], [lab[s] for s in sb]


def _contrasts(conditions: dict[str, str]) -> list[tuple[str, str]]:
    """Every condition against the first one of the samples sheet (the reference)."""
    levels = list(dict.fromkeys(c for c in conditions.values() if c))
    return [(lev, levels[0]) for lev in levels[1:]]


def condition_differences(profiles: dict[str, dict[str, pd.DataFrame]],
                          conditions: dict[str, str],
                          annotations: dict[str, str] | None = None,
                          batches: dict[str, str] | None = None) -> pd.DataFrame:
    """Per contrast (each condition vs the reference), domain and feature: the mean of the
    per-sample domain profiles in each condition, their difference as log2 fold change (X is
    log1p: the difference of means divided by ln 2; with batches, the batch-adjusted
    difference), Student's t over samples (or the condition's t in a regression on condition
    and batch, :func:`_condition_test`), p and BH q (per contrast and modality). ``profiles``:
    sample → modality → domains × features frame (from :func:`pseudobulk`); features present
    in every sample of the contrast are compared. ``batches``: sample → batch label."""
    annotations = annotations or {}
    rows = []
    for cond_a, cond_b in _contrasts(conditions):
        sa = [s for s, c in conditions.items() if c == cond_a and s in profiles]
        sb = [s for s, c in conditions.items() if c == cond_b and s in profiles]
        if not sa or not sb:
            continue
        contrast = f"{cond_a} vs {cond_b}"
        mods = sorted({m for s in sa + sb for m in profiles[s]})
        for mod in mods:
            frames = {s: profiles[s][mod] for s in sa + sb if mod in profiles[s]}
            feats = sorted(set.intersection(*(set(f.columns) for f in frames.values())))
            doms = sorted(set.union(*(set(f.index) for f in frames.values())))
            part = []
            for d in doms:
                ka = [s for s in sa if s in frames and d in frames[s].index]
                kb = [s for s in sb if s in frames and d in frames[s].index]
                if not ka or not kb:
                    continue
                A = np.array([frames[s].loc[d, feats].to_numpy(float) for s in ka])
                B = np.array([frames[s].loc[d, feats].to_numpy(float) for s in kb])
                diff, t, p, note = _condition_test(A, B, *_batch_labels(batches, ka, kb))
                part.append(pd.DataFrame({
                    "contrast": contrast, "domain": d, "modality": mod, "feature": feats,
                    "annotation": [annotations.get(f, "") if mod == Key.mod.msi else ""
                                   for f in feats],
                    "n_a": len(A), "n_b": len(B), "mean_a": A.mean(0), "mean_b": B.mean(0),
                    "log2fc": diff / np.log(2), "t": t, "pval": p, "note": note}))
            if part:
                rows.append(_with_qval(pd.concat(part, ignore_index=True)))
    if not rows:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    out = pd.concat(rows, ignore_index=True)[FEATURE_COLUMNS]
    return out.sort_values(["qval", "pval", "contrast", "domain"], kind="stable",
                           na_position="last").reset_index(drop=True)


def by_evidence(t: pd.DataFrame, qcol: str | None = "qval", ecol: str | None = "log2fc") -> pd.DataFrame:
    """Rows of a condition table, strongest evidence first: by q-value, equal q by the larger
    absolute effect; by the absolute effect alone when no row has a q-value (one sample per
    condition: effects only). Missing values last; columns that are absent are skipped."""
    keys = {}
    if qcol in t.columns and pd.to_numeric(t[qcol], errors="coerce").notna().any():
        keys["q"] = pd.to_numeric(t[qcol], errors="coerce")
    if ecol in t.columns:
        keys["e"] = -pd.to_numeric(t[ecol], errors="coerce").abs()
    if not keys:
        return t
    k = pd.DataFrame(keys, index=t.index)
    return t.loc[k.sort_values(list(keys), na_position="last", kind="stable").index]


def _with_qval(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``qval`` column: BH over the rows that have a p-value (NaN elsewhere)."""
    ok = df["pval"].notna().to_numpy()
    q = np.full(len(df), np.nan)
    q[ok] = bh_fdr(df.loc[ok, "pval"].to_numpy())
    df["qval"] = q
    return df


def abundance_differences(spots: pd.DataFrame, model: str, conditions: dict[str, str],
                          batches: dict[str, str] | None = None) -> pd.DataFrame:
    """Per contrast and domain: each condition's mean share of spots in the domain (over its
    samples), the difference (batch-adjusted with batches), Student's t over samples (or the
    condition's t given the batch), p and BH q (per contrast)."""
    sub = spots.dropna(subset=[model])
    frac = pd.crosstab(sub["sample"], sub[model].astype(int), normalize="index")
    rows = []
    for cond_a, cond_b in _contrasts(conditions):
        sa = [s for s in frac.index if conditions.get(s) == cond_a]
        sb = [s for s in frac.index if conditions.get(s) == cond_b]
        if not sa or not sb:
            continue
        A, B = frac.loc[sa].to_numpy(), frac.loc[sb].to_numpy()
        diff, t, p, note = _condition_test(A, B, *_batch_labels(batches, sa, sb))
        df = pd.DataFrame({
            "contrast": f"{cond_a} vs {cond_b}", "domain": frac.columns, "n_a": len(sa),
            "n_b": len(sb), "fraction_a": A.mean(0), "fraction_b": B.mean(0),
            "difference": diff, "t": t, "pval": p, "note": note})
        rows.append(_with_qval(df))
    if not rows:
        return pd.DataFrame(columns=ABUNDANCE_COLUMNS)
    return pd.concat(rows, ignore_index=True)[ABUNDANCE_COLUMNS]


def run_conditions(spots: pd.DataFrame, model: str, conditions: dict[str, str],
                   paired: dict[str, tuple[ad.AnnData, ad.AnnData]], *,
                   batches: dict[str, str] | None = None,
                   min_spots: int = 10, mz_tol_ppm: float = 10.0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables for the cohort: feature differences (genes and metabolites) per domain and
    domain-abundance differences. ``paired``: sample → (rna, msi) on the same spots;
    ``batches``: sample → the samples sheet's batch (conditions are then compared within
    batches, :func:`_condition_test`)."""
    conditions = {s: c for s, c in conditions.items() if c and s in paired}
    lab = spots.set_index(["sample", "barcode"])[model]
    ref_mz = np.concatenate([m.var[Key.var.mz].to_numpy(float) for _, m in paired.values()
                             if Key.var.mz in m.var] or [np.array([])])
    ref_mz = _mz_clusters(ref_mz, mz_tol_ppm)
    profiles, annotations = {}, {}
    for s, (rna, msi) in paired.items():
        if s not in conditions:
            continue
        labels = lab.loc[s] if s in lab.index.get_level_values(0) else pd.Series(dtype=float)
        keys = _metabolite_keys(msi, ref_mz, mz_tol_ppm)
        annotations.update({k: k for k in keys if not k.startswith("m/z ")})
        profiles[s] = {Key.mod.rna: pseudobulk(rna, labels, np.asarray(rna.var_names), min_spots),
                       Key.mod.msi: pseudobulk(msi, labels, keys, min_spots)}
    feats = condition_differences(profiles, conditions, annotations, batches)
    abund = abundance_differences(spots[spots["sample"].isin(list(conditions))], model,
                                  conditions, batches)
    log.info("conditions: %d contrasts, %d feature rows (%d with q ≤ 0.05), %d abundance rows",
             feats["contrast"].nunique(), len(feats), int((feats["qval"] <= 0.05).sum()),
             len(abund))
    return feats, abund
