"""Simulate one paired sample (Visium section + MSI raster) with known truth, and write it in
the real input formats (Space Ranger ``outs/`` folder, imzML/ibd) plus a truth folder.

Model, in the ST frame (µm):
* tissue: an irregular asymmetric blob that may run past the capture area's edge;
* domains: warped Voronoi cells (≥ 2 seeds per domain, curved boundaries, split domains);
* genes: negative-binomial counts, log-mean = baseline + domain effect + link/decoy smooth fields,
  times a log-normal size factor;
* metabolites ([M+H]+ of real metabolites from the shipped table): log-normal intensities with
  domain effects, link/decoy smooth fields, a per-pixel ionisation factor (what TIC
  normalisation corrects), partial-volume at the tissue edge, intensity-dependent dropout
  (zero inflation), matrix peaks that are strong off tissue and suppressed on it, and random
  noise peaks and ppm mass error in processed mode;
* true links: a gene and a metabolite share one smooth field (a metabolite–gene association that is
  not explained by the domains); decoys: features with their own independent smooth fields, which
  look correlated under plain Pearson but are independent;
* the MSI raster lives in its own frame: MSI µm → ST µm is a similarity (rotation 0–360°,
  optional reflection, scale, translation) followed by a smooth displacement field of amplitude
  ``warp_um``; it covers off-tissue area around the whole tissue.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import VISIUM_SPOT_DIAMETER_UM, VISIUM_SPOT_PITCH_UM
from ..io.spaceranger import visium_hd_barcodes
from .fields import SmoothField, tissue_mask_fn, warped_voronoi_domains

log = logging.getLogger(__name__)

PROTON = 1.007276
#: CHCA matrix ions (positive mode): [M+H]+, [M+Na]+, [M+K]+, [2M+H]+
MATRIX_MZ = (190.04987, 212.03181, 228.00575, 379.09246)
MT_GENES = ("MT-CO1", "MT-CO2", "MT-ND1", "MT-ND2", "MT-ATP6")


@dataclass
class DemoParams:
    """Everything that defines one simulated sample (the ``demo`` config section + overrides)."""

    seed: int = 0
    capture_size_um: float = 3000.0
    tissue_radius_frac: float = 0.36
    tissue_offset_frac: float = 0.08
    n_domains: int = 5
    n_genes: int = 300
    n_metabolites: int = 60
    n_links: int = 12
    decoy_fraction: float = 0.3
    msi_pixel_size_um: float = 30.0
    msi_pixel_size_y_um: float | None = None  # rectangular pixels: the y step (None: square)
    rotation_deg: float | None = None
    reflect: bool | None = None
    scale_range: tuple[float, float] = (0.9, 1.1)
    warp_um: float = 30.0
    imzml_mode: str = "processed"
    mz_error_ppm: float = 2.0
    dropout: float = 0.25
    noise_peaks_per_pixel: float = 2.0
    nb_dispersion: float = 5.0
    # --- geometry options (registration benchmarks); the defaults reproduce the plain demo
    outline_irregularity: float = 1.0  # 0 = a disc (a symmetric outline), 1 = the usual blob
    adjacent_section_um: float = 0.0  # MSI from an adjacent section: its tissue/domains deformed
    adjacent_wavelength_um: tuple[float, float] = (250.0, 600.0)  # scale of that deformation
    msi_crop_frac: float = 0.0  # crop this fraction of the MSI raster on one (random) side
    n_landmarks: int = 0  # landmarks (truth/landmarks.csv) placed by a simulated annotator
    # > 0: a Visium HD section of square bins of this side (µm) instead of 55 µm spots; the
    # tissue, domains, fields, MSI and transform stay those of the Visium sample of the same seed
    st_bin_um: float = 0.0
    landmark_noise_um: float = 10.0  # SD of the annotator's placement error, in each section
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: dict, sample: str, seed: int) -> "DemoParams":
        """Build from the config's ``demo`` section; per-sample overrides in ``samples[sample]``.

        The sample's seed is ``seed`` combined with a stable hash of its name, so samples differ
        and the same config always gives the same data.
        """
        base = {k: v for k, v in section.items() if k != "samples"}
        base.update((section.get("samples") or {}).get(sample) or {})
        names = {f for f in cls.__dataclass_fields__} - {"seed", "extra"}
        kw = {k: v for k, v in base.items() if k in names}
        for key in ("scale_range", "adjacent_wavelength_um"):
            if key in kw:
                kw[key] = tuple(kw[key])
        sample_seed = (int(seed) * 1_000_003 + zlib.crc32(sample.encode())) % (2**32)
        return cls(seed=sample_seed, **kw)


def _hex_grid(capture_um: float):
    """Visium-like spot grid: 100 µm pitch, rows 86.6 µm apart, alternate rows offset 50 µm."""
    dy = VISIUM_SPOT_PITCH_UM * np.sqrt(3) / 2
    n_rows = int(capture_um // dy)
    n_cols = int(capture_um // (VISIUM_SPOT_PITCH_UM / 2))
    rows, cols = [], []
    for r in range(n_rows):
        for c in range(r % 2, n_cols, 2):
            rows.append(r)
            cols.append(c)
    rows, cols = np.array(rows), np.array(cols)
    xy = np.stack([cols * VISIUM_SPOT_PITCH_UM / 2 + 100.0, rows * dy + 100.0], 1)
    return rows, cols, xy


def _square_grid(hex_xy: np.ndarray, bin_um: float):
    """Visium HD-like bin grid: the squares of side ``bin_um`` that lie inside the capture area
    of the Visium spots ``hex_xy`` (:func:`_hex_grid`; their extent plus a spot radius), so a
    section cut at the capture edge is cut at the same place on both platforms; bin (row, col)
    is centred at (col + ½, row + ½) × ``bin_um``, as Space Ranger lays bins out."""
    r = VISIUM_SPOT_DIAMETER_UM / 2
    lo, hi = hex_xy.min(0) - r, hex_xy.max(0) + r
    first = np.ceil(lo / bin_um).astype(int)  # bins wholly inside [lo, hi]
    last = np.floor(hi / bin_um).astype(int) - 1
    rows, cols = (a.ravel() for a in np.meshgrid(np.arange(first[1], last[1] + 1),
                                                 np.arange(first[0], last[0] + 1), indexing="ij"))
    xy = np.stack([(cols + 0.5) * bin_um, (rows + 0.5) * bin_um], 1).astype(float)
    return rows, cols, xy


def _barcodes(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ACGT"))
    seen, out = set(), []
    while len(out) < n:
        b = "".join(rng.choice(letters, 16)) + "-1"
        if b not in seen:
            seen.add(b)
            out.append(b)
    return out


def _pick_metabolites(rng: np.random.Generator, n: int, min_sep_ppm: float = 60.0) -> pd.DataFrame:
    table = pd.read_csv(resources.files("spatialfuse.resources") / "metabolites.tsv", sep="\t")
    table = table.drop_duplicates("formula")
    table = table.assign(mz=table["monoisotopic_mass"] + PROTON)
    table = table[(table["mz"] > 80) & (table["mz"] < 1000)]
    order = rng.permutation(len(table))
    chosen: list[int] = []
    taken = np.array(MATRIX_MZ)
    for i in order:
        mz = table["mz"].iloc[i]
        if np.all(np.abs(taken - mz) / mz * 1e6 > min_sep_ppm):
            chosen.append(i)
            taken = np.r_[taken, mz]
        if len(chosen) == n:
            break
    return table.iloc[chosen].reset_index(drop=True)


def _gene_symbols(rng: np.random.Generator, genes: list[str], link_genes: np.ndarray,
                  link_metabolites: list[str]) -> list[str]:
    """Human gene symbols of the shipped pathway table for the simulated genes (the
    mitochondrial ones keep their names). Gene i gets the same symbol in every sample (a fixed
    draw), so cohort tables line up; then link gene k is renamed, with ``rng``, to a gene that
    shares a pathway with link metabolite k, where the table has one."""
    from ..interpret.pathways import load_pathways, metabolite_key

    table = load_pathways(None)
    gene_rows = table[table["analyte_type"] == "gene"]
    pool = sorted(set(gene_rows["name"]) - set(MT_GENES))
    idx = [i for i, name in enumerate(genes) if name not in MT_GENES]
    out = list(genes)
    for i, sym in zip(idx, np.random.default_rng(9).choice(pool, size=len(idx), replace=False)):
        out[i] = str(sym)
    by_pathway = gene_rows.groupby("pathway_id")["name"].apply(sorted)
    comp = table[table["analyte_type"] == "compound"]
    used = set(out)
    for g, met in zip(link_genes, link_metabolites):
        pids = sorted(set(comp.loc[comp["key"] == metabolite_key(met), "pathway_id"]))
        cands = sorted({x for pid in pids for x in by_pathway.get(pid, [])} - used)
        if cands:
            out[int(g)] = str(rng.choice(cands))
            used.add(out[int(g)])
    return out


def _rotation(theta_deg: float, reflect: bool, scale: float) -> np.ndarray:
    t = np.deg2rad(theta_deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    F = np.diag([-1.0, 1.0]) if reflect else np.eye(2)
    return scale * R @ F


def _landmarks(rng: np.random.Generator, p: DemoParams, u: np.ndarray, frac: np.ndarray,
               msi_to_st) -> pd.DataFrame:
    """``n_landmarks`` matched points on tissue, spread out (farthest-point order), as an annotator
    would place them: each position off by ``landmark_noise_um`` (SD) in each section."""
    on = np.nonzero(frac > 0.9)[0]
    pick = [int(rng.choice(on))]
    d = np.linalg.norm(u[on] - u[pick[0]], axis=1)
    for _ in range(p.n_landmarks - 1):
        j = int(np.argmax(d * rng.uniform(0.7, 1.0, d.size)))
        pick.append(int(on[j]))
        d = np.minimum(d, np.linalg.norm(u[on] - u[on[j]], axis=1))
    msi = u[pick] + rng.uniform(-0.5, 0.5, (len(pick), 2)) * msi_pixel_xy(p)
    st = msi_to_st(msi)
    noise = p.landmark_noise_um
    return pd.DataFrame({
        "st_x_um": st[:, 0] + rng.normal(0, noise, len(pick)),
        "st_y_um": st[:, 1] + rng.normal(0, noise, len(pick)),
        "msi_x_um": msi[:, 0] + rng.normal(0, noise, len(pick)),
        "msi_y_um": msi[:, 1] + rng.normal(0, noise, len(pick)),
    })


def observe_msi(rng: np.random.Generator, eta: np.ndarray, frac: np.ndarray, base: np.ndarray,
                dropout: float, ionisation_sd: float, noise_sd: float) -> np.ndarray:
    """MSI observation model: true log-abundance ``eta`` (pixels × ions) → float32 intensities
    with the matrix ions appended: per-pixel ionisation, log-normal noise, partial volume
    ``frac``, intensity-dependent dropout, rare off-tissue traces and matrix peaks (strongest
    off tissue). ``base``: each ion's baseline log-abundance."""
    n = len(frac)
    ion = rng.lognormal(0, ionisation_sd, n)
    logI = eta + rng.normal(0, noise_sd, eta.shape)
    I = np.exp(logI) * (frac * ion)[:, None]
    p_drop = np.clip(dropout * np.exp(-(logI - base[None, :])), 0, 0.95)
    I[rng.random(I.shape) < p_drop] = 0.0
    trace = (frac <= 0)[:, None] & (rng.random(I.shape) < 0.03)  # off tissue: delocalised traces
    I[trace] = np.exp(base - 3)[None, :].repeat(n, 0)[trace] * rng.lognormal(0, 0.5, trace.sum())
    matrix = (np.exp(rng.normal(8.0, 0.2, (n, len(MATRIX_MZ)))) * (1 - 0.7 * frac)[:, None]
              * ion[:, None])
    return np.c_[I, matrix].astype(np.float32)


def simulate_sample(p: DemoParams) -> dict:
    """Simulate one paired sample; returns arrays and tables (see :func:`write_demo_sample`)."""
    rng = np.random.default_rng(p.seed)
    cap = p.capture_size_um
    # ---- ST capture area, tissue, domains
    rows, cols, spot_xy = _hex_grid(cap)
    centre = np.array([cap / 2 + 100, cap / 2 + 100]) + rng.normal(0, p.tissue_offset_frac * cap, 2)
    radius = p.tissue_radius_frac * cap
    inside, outline = tissue_mask_fn(rng, centre, radius, p.outline_irregularity)
    domain_of = warped_voronoi_domains(rng, centre, radius * 0.9, p.n_domains)
    in_tissue = inside(spot_xy)
    barcodes = _barcodes(rng, len(spot_xy))

    # ---- smooth fields: one per true link, one per decoy feature
    link_fields = [SmoothField.random(rng) for _ in range(p.n_links)]

    # ---- genes
    n_mt = len(MT_GENES)
    genes = [f"Gene{i:04d}" for i in range(p.n_genes - n_mt)] + list(MT_GENES)
    G = len(genes)
    base_g = rng.normal(0.3, 1.0, G)
    base_g[-n_mt:] = rng.normal(1.5, 0.3, n_mt)
    dom_g = np.zeros((p.n_domains, G))
    n_mark = max(3, (G - n_mt) // (3 * p.n_domains))
    perm = rng.permutation(G - n_mt)
    for d in range(p.n_domains):
        idx = perm[d * n_mark:(d + 1) * n_mark]
        dom_g[d, idx] = rng.uniform(1.0, 1.8, idx.size)
    free_g = perm[p.n_domains * n_mark:]
    link_genes = free_g[: p.n_links]
    decoy_pool_g = free_g[p.n_links:]
    decoy_g = decoy_pool_g[rng.random(decoy_pool_g.size) < p.decoy_fraction]

    # ---- metabolites
    mets = _pick_metabolites(rng, p.n_metabolites)
    M = len(mets)
    base_m = rng.normal(6.0, 0.8, M)
    dom_m = np.zeros((p.n_domains, M))
    n_mark_m = max(2, M // (3 * p.n_domains))
    perm_m = rng.permutation(M)
    for d in range(p.n_domains):
        idx = perm_m[d * n_mark_m:(d + 1) * n_mark_m]
        dom_m[d, idx] = rng.uniform(0.9, 1.5, idx.size)
    free_m = perm_m[p.n_domains * n_mark_m:]
    if free_m.size < p.n_links:
        raise ValueError("too few metabolites for the requested number of links")
    link_mets = free_m[: p.n_links]
    decoy_pool_m = free_m[p.n_links:]
    decoy_m = decoy_pool_m[rng.random(decoy_pool_m.size) < p.decoy_fraction]
    decoy_fields_g = {int(g): SmoothField.random(rng) for g in decoy_g}
    decoy_fields_m = {int(m): SmoothField.random(rng) for m in decoy_m}
    link_sign = rng.choice([-1.0, 1.0], p.n_links)
    link_beta_g = rng.uniform(0.6, 0.9, p.n_links)
    link_beta_m = rng.uniform(0.6, 0.9, p.n_links)

    def gene_logmean(xy, dom):
        eta = base_g[None, :] + dom_g[dom]
        for k, g in enumerate(link_genes):
            eta[:, g] += link_beta_g[k] * link_fields[k](xy)
        for g, f in decoy_fields_g.items():
            eta[:, g] += 0.7 * f(xy)
        return eta

    def met_logmean(xy, dom):
        eta = base_m[None, :] + dom_m[dom]
        for k, m in enumerate(link_mets):
            eta[:, m] += link_sign[k] * link_beta_m[k] * link_fields[k](xy)
        for m, f in decoy_fields_m.items():
            eta[:, m] += 0.7 * f(xy)
        return eta

    st_xy = spot_xy[in_tissue]
    st_dom = domain_of(st_xy)
    mu = np.exp(gene_logmean(st_xy, st_dom)) * rng.lognormal(0, 0.3, (len(st_xy), 1))
    theta = p.nb_dispersion
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.int32)
    if p.st_bin_um > 0:
        # Visium HD instead: square bins over the same capture area, their counts from their own
        # generator, so everything else (tissue, domains, fields, the MSI, the transform) is the
        # Visium sample's of the same seed and the two platforms compare case by case (the spot
        # counts above are drawn and dropped for that: they advance the main generator). A bin's
        # expected depth is a 55 µm spot's scaled by area.
        rows, cols, spot_xy = _square_grid(spot_xy, p.st_bin_um)
        in_tissue = inside(spot_xy)
        barcodes = visium_hd_barcodes(int(round(p.st_bin_um)), rows, cols)
        st_xy = spot_xy[in_tissue]
        st_dom = domain_of(st_xy)
        rng_hd = np.random.default_rng([p.seed, 5])
        area = p.st_bin_um**2 / (np.pi * (VISIUM_SPOT_DIAMETER_UM / 2) ** 2)
        mu = np.exp(gene_logmean(st_xy, st_dom)) * area * rng_hd.lognormal(0, 0.3, (len(st_xy), 1))
        counts = rng_hd.negative_binomial(theta, theta / (theta + mu)).astype(np.int32)

    # ---- true transform MSI native µm -> ST µm
    rot = float(rng.uniform(0, 360)) if p.rotation_deg is None else float(p.rotation_deg)
    refl = bool(rng.random() < 0.5) if p.reflect is None else bool(p.reflect)
    scale = float(rng.uniform(*p.scale_range))
    Mx = _rotation(rot, refl, scale)
    wx, wy = SmoothField.random(rng, (800.0, 2500.0), 8), SmoothField.random(rng, (800.0, 2500.0), 8)
    r_max = float(np.max(np.hypot(*(outline - centre).T)))
    shift = rng.normal(0, 0.05 * radius, 2)
    px = p.msi_pixel_size_um
    pxy = msi_pixel_xy(p)
    half = (r_max + np.hypot(*shift) + 2 * p.warp_um + 6 * float(pxy.max())) / scale
    n_xy = np.ceil(2 * half / pxy).astype(int)  # pixels along x and y
    u_c = (n_xy + 1) / 2 * pxy
    b = centre + shift - Mx @ u_c

    def warp(st):
        # amplitude-normalised: each component has sd ~ warp_um / 2, peaks ~ warp_um
        return st + (p.warp_um / 2) * np.stack([wx(st), wy(st)], 1)

    def msi_to_st(u):
        return warp(np.asarray(u) @ Mx.T + b)

    ii, jj = np.meshgrid(np.arange(1, n_xy[0] + 1), np.arange(1, n_xy[1] + 1), indexing="xy")
    pix = np.stack([ii.ravel(), jj.ravel()], 1)
    # geometry options draw from their own generator, so the plain demo is unchanged
    rng_geo = np.random.default_rng([p.seed, 4])
    if p.msi_crop_frac > 0:
        axis, side = int(rng_geo.integers(2)), bool(rng_geo.integers(2))
        cut = int(round(n_xy[axis] * p.msi_crop_frac))
        keep = pix[:, axis] > cut if side else pix[:, axis] <= n_xy[axis] - cut
        pix = pix[keep]
    u = pix * pxy
    pix_st = msi_to_st(u)
    # an adjacent section: the MSI sees tissue and domains where the ST section has them,
    # displaced by a small, short-wavelength field (not part of the true transform)
    if p.adjacent_section_um > 0:
        ax_, ay_ = (SmoothField.random(rng_geo, p.adjacent_wavelength_um, 8) for _ in range(2))

        def geo(st):
            return st + (p.adjacent_section_um / 2) * np.stack([ax_(st), ay_(st)], 1)
    else:
        def geo(st):
            return st
    pix_geo = geo(pix_st)
    # tissue fraction of each pixel (partial volume) from 4x4 sub-samples
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    frac = np.zeros(len(u))
    for dx in sub:
        for dy in sub:
            frac += inside(geo(msi_to_st(u + np.array([dx, dy]) * pxy)))
    frac /= 16.0
    pix_dom = domain_of(pix_geo)
    on = frac > 0
    intens = observe_msi(rng, met_logmean(pix_geo, pix_dom), frac, base_m, p.dropout,
                         ionisation_sd=0.25, noise_sd=0.3)
    mz_true = np.r_[mets["mz"].to_numpy(), np.array(MATRIX_MZ)]

    # real gene symbols (own generator: the simulated numbers do not change): each link gene is
    # an enzyme gene of a pathway holding its metabolite, so pathway enrichment has a truth
    genes = _gene_symbols(np.random.default_rng([p.seed, 9]), genes, link_genes,
                          mets["name"].iloc[link_mets].tolist())
    truth_links = pd.DataFrame({
        "gene": [genes[g] for g in link_genes],
        "metabolite": mets["name"].iloc[link_mets].to_numpy(),
        "mz": mets["mz"].iloc[link_mets].to_numpy(),
        "sign": link_sign,
    })
    landmarks = _landmarks(rng_geo, p, u, frac, msi_to_st) if p.n_landmarks > 0 else None
    # what one modality can know of the other at each tissue spot: the log-mean without the
    # features' own (decoy) fields and without noise (baseline + domain effect + link field)
    shared_g = base_g[None, :] + dom_g[st_dom]
    shared_m = base_m[None, :] + dom_m[st_dom]
    for k, (g, m) in enumerate(zip(link_genes, link_mets)):
        f = link_fields[k](st_xy)
        shared_g[:, g] += link_beta_g[k] * f
        shared_m[:, m] += link_sign[k] * link_beta_m[k] * f
    in_bc = [bc for bc, t in zip(barcodes, in_tissue) if t]
    out = {
        "params": p,
        "landmarks": landmarks,
        "spots": pd.DataFrame({
            "barcode": barcodes, "x_um": spot_xy[:, 0], "y_um": spot_xy[:, 1],
            "array_row": rows, "array_col": cols, "in_tissue": in_tissue.astype(int),
            "domain": np.where(in_tissue, domain_of(spot_xy), -1),
        }).set_index("barcode"),
        "counts": counts,
        "genes": genes,
        "barcodes_in_tissue": in_bc,
        "shared_logmean": {
            "genes": pd.DataFrame(shared_g, index=in_bc, columns=genes),
            "metabolites": pd.DataFrame(shared_m, index=in_bc, columns=mets["name"].tolist()),
        },
        # everything but the noise: the shared part plus each decoy metabolite's own field
        # (what a prediction that also reads the measured MSI nearby can know; benchmarks)
        "full_logmean_metabolites": pd.DataFrame(met_logmean(st_xy, st_dom), index=in_bc,
                                                 columns=mets["name"].tolist()),
        "msi_pixels": pd.DataFrame({
            "x": pix[:, 0], "y": pix[:, 1], "msi_x_um": u[:, 0], "msi_y_um": u[:, 1],
            "st_x_um": pix_st[:, 0], "st_y_um": pix_st[:, 1], "tissue_fraction": frac,
            "domain": np.where(on, pix_dom, -1),
        }),
        "mz_true": mz_true,
        "intensities": intens,
        "metabolites": mets.assign(role="metabolite"),
        "links": truth_links,
        "decoys": {"genes": [genes[g] for g in decoy_g],
                   "metabolites": mets["name"].iloc[decoy_m].tolist()},
        "markers": {
            "genes": {int(d): [genes[g] for g in np.nonzero(dom_g[d])[0]] for d in range(p.n_domains)},
            "metabolites": {int(d): mets["name"].iloc[np.nonzero(dom_m[d])[0]].tolist()
                            for d in range(p.n_domains)},
        },
        "transform": {
            "rotation_deg": rot, "reflect": refl, "scale": scale,
            "affine": np.r_[np.c_[Mx, b], [[0, 0, 1]]].tolist(),
            "warp_um": p.warp_um, "msi_pixel_size_um": px,
            "msi_pixel_size_xy_um": [float(v) for v in pxy],
            "description": "ST_um = warp(A @ [msi_x_um, msi_y_um, 1]); per-pixel truth in msi_pixels.tsv.gz",
        },
        "outline": outline,
        "domain_of": domain_of,
        "inside": inside,
    }
    log.info("simulated: %d spots in tissue (of %d), %d MSI pixels (%d on tissue), %d genes, "
             "%d metabolites, rotation %.1f deg, reflect %s, scale %.3f", int(in_tissue.sum()),
             len(spot_xy), len(u), int(on.sum()), G, M, rot, refl, scale)
    return out


def _he_image(sim: dict, capture_um: float, size_px: int = 600) -> tuple[np.ndarray, float]:
    """An H&E-like thumbnail of the ST section (tissue tinted by domain), and its µm→px scale."""
    extent = capture_um + 200
    s = size_px / extent
    g = (np.arange(size_px) + 0.5) / s
    xx, yy = np.meshgrid(g, g, indexing="xy")
    xy = np.stack([xx.ravel(), yy.ravel()], 1)
    tis = sim["inside"](xy)
    dom = sim["domain_of"](xy)
    pinks = np.array([[0.85, 0.55, 0.75], [0.75, 0.45, 0.70], [0.90, 0.65, 0.80],
                      [0.65, 0.40, 0.65], [0.80, 0.60, 0.85], [0.70, 0.50, 0.78],
                      [0.88, 0.52, 0.68], [0.60, 0.45, 0.72]])
    img = np.ones((xy.shape[0], 3)) * 0.96
    img[tis] = pinks[dom[tis] % len(pinks)]
    return img.reshape(size_px, size_px, 3), s


#: ``to_csv(compression=...)`` for gzipped truth tables: no timestamp in the header, so one seed
#: writes byte-identical files.
GZIP_NO_TIMESTAMP = {"method": "gzip", "mtime": 0}


def msi_pixel_xy(p) -> np.ndarray:
    """The simulated raster's (x, y) pixel size in µm (``msi_pixel_size_y_um`` None: square)."""
    y = getattr(p, "msi_pixel_size_y_um", None)
    return np.array([p.msi_pixel_size_um, p.msi_pixel_size_um if y is None else y], float)


def _written_pixel_size(p):
    """The pixel size the imzML states: one number for square pixels (the files of earlier
    versions, byte for byte), else (x, y)."""
    x, y = msi_pixel_xy(p)
    return p.msi_pixel_size_um if x == y else (float(x), float(y))


def write_simulated_imzml(path: str | Path, coords: np.ndarray, mz_true: np.ndarray,
                          inten: np.ndarray, p, rng: np.random.Generator) -> None:
    """Write simulated spectra (pixels × ions) as imzML: continuous on the true axis, or processed
    with per-peak ppm error and uniform noise peaks (``p``: ``imzml_mode``, ``mz_error_ppm``,
    ``noise_peaks_per_pixel``, ``msi_pixel_size_um``)."""
    import hashlib
    import uuid

    from ..io.imzml import write_imzml

    # the UUID is derived from the simulated content (not random), so one seed gives
    # byte-identical files
    h = hashlib.sha1()
    for a in (coords, mz_true, inten):
        h.update(np.ascontiguousarray(a).tobytes())
    uid = uuid.UUID(bytes=h.digest()[:16], version=4)
    if p.imzml_mode == "continuous":
        order = np.argsort(mz_true)
        write_imzml(path, coords, mz_true[order], inten[:, order], mode="continuous",
                    pixel_size_um=_written_pixel_size(p), uuid=uid)
        return
    mzs, ints = [], []
    for i in range(len(coords)):
        keep = inten[i] > 0
        mz = mz_true[keep] * (1 + rng.normal(0, p.mz_error_ppm * 1e-6, keep.sum()))
        v = inten[i, keep]
        k = rng.poisson(p.noise_peaks_per_pixel)
        if k:
            mz = np.r_[mz, rng.uniform(100, 900, k)]
            v = np.r_[v, rng.lognormal(3.0, 0.5, k).astype(np.float32)]
        o = np.argsort(mz)
        mzs.append(mz[o])
        ints.append(v[o])
    write_imzml(path, coords, mzs, ints, mode="processed", pixel_size_um=_written_pixel_size(p),
                uuid=uid)


def write_shared_logmean(shared: dict, truth_dir: str | Path) -> None:
    """``truth/shared_logmean_{genes,metabolites}.tsv.gz`` (tissue spots × features): each
    feature's true log-mean without its own decoy field and without noise — what the other
    modality can tell about it, i.e. the cross-modal oracle's prediction."""
    for what, table in shared.items():
        table.rename_axis("barcode").to_csv(Path(truth_dir) / f"shared_logmean_{what}.tsv.gz",
                                            sep="\t", float_format="%.5g",
                                            compression=GZIP_NO_TIMESTAMP)


def write_demo_sample(sim: dict, st_dir: str | Path, imzml_path: str | Path,
                      truth_dir: str | Path, um_per_px: float = 0.65) -> None:
    """Write a simulated sample as a Space Ranger folder, an imzML/ibd pair and a truth folder.
    A Visium HD sample (``st_bin_um`` > 0) is written as Space Ranger HD's ``outs/``:
    ``st_dir/binned_outputs/square_XXXum/`` (read it with ``ingest.st.visium_hd_bin_um`` set to
    that size)."""
    from ..io.spaceranger import VISIUM_HD_UM_PER_PX, write_spaceranger, write_visium_hd_bins

    p: DemoParams = sim["params"]
    rng = np.random.default_rng(p.seed + 1)
    img, s_um = _he_image(sim, p.capture_size_um)
    spots = sim["spots"]
    if p.st_bin_um > 0:
        if float(p.st_bin_um) not in (8.0, 16.0):  # 2 µm bins: millions per section
            raise ValueError(f"demo st_bin_um must be a Visium HD bin size (8 or 16), got {p.st_bin_um}")
        write_visium_hd_bins(st_dir, sim["counts"], spots["array_row"].to_numpy(),
                             spots["array_col"].to_numpy(), sim["genes"], bin_um=int(p.st_bin_um),
                             in_tissue=spots["in_tissue"].to_numpy(), lowres_image=img,
                             lowres_scalef=s_um * VISIUM_HD_UM_PER_PX)
    else:
        write_spaceranger(
            st_dir, sim["counts"], sim["barcodes_in_tissue"], sim["genes"], spots,
            um_per_px=um_per_px, lowres_image=img, lowres_scalef=s_um * um_per_px,
        )
    pixels = sim["msi_pixels"]
    coords = pixels[["x", "y"]].to_numpy()
    inten = sim["intensities"]
    mz_true = sim["mz_true"]
    imzml_path = Path(imzml_path)
    imzml_path.parent.mkdir(parents=True, exist_ok=True)
    write_simulated_imzml(imzml_path, coords, mz_true, inten, p, rng)
    truth = Path(truth_dir)
    truth.mkdir(parents=True, exist_ok=True)
    sim["spots"].to_csv(truth / "spots.tsv", sep="\t")
    pixels.to_csv(truth / "msi_pixels.tsv.gz", sep="\t", index=False,
                  compression=GZIP_NO_TIMESTAMP)
    sim["links"].to_csv(truth / "links.tsv", sep="\t", index=False)
    sim["metabolites"].to_csv(truth / "metabolites.tsv", sep="\t", index=False)
    (truth / "transform.json").write_text(json.dumps(sim["transform"], indent=2))
    if sim.get("landmarks") is not None:
        sim["landmarks"].to_csv(truth / "landmarks.csv", index=False)
    write_shared_logmean(sim["shared_logmean"], truth)
    extra = {"decoys": sim["decoys"], "markers": sim["markers"], "params": asdict(p)}
    (truth / "design.json").write_text(json.dumps(extra, indent=2, default=str))
