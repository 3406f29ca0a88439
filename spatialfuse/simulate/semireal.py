"""Semi-real paired data: a REAL spatial transcriptomics section with a SIMULATED MSI raster.

No paired MSI + ST dataset is public in a form we can ship, so this module pairs a real ST
section (the legacy-ST human breast-cancer serial sections of Ståhl et al. 2016, as
redistributed by PASTE; see ``shared/data/real/st_breast_cancer_4_serial_sections_paste``) with
an MSI raster simulated from it. Everything written is labelled **SIMULATED MSI / real ST**.

Model (ST frame, µm; 1 ST array unit = 200 µm, spots 100 µm across):

* linked metabolites: real metabolites of the shipped annotation table (names, neutral masses,
  [M+H]+) that share a Reactome/WikiPathways pathway with genes measured in the section (and,
  when MetaChatDB is given, whose sensor genes are measured); each metabolite's log-abundance
  is a weighted sum of the *real* expression of up to ``max_genes_per_metabolite`` of those
  genes (log-normalised, spatially smoothed over ``expression_smoothing_um``, standardised;
  weights of random sign, production or consumption), plus an own smooth field that no gene
  explains;
* unlinked background ions: real metabolites with only their own smooth fields;
* MSI physics as in the demo: a per-metabolite ion yield, a per-pixel ionisation factor (what
  TIC normalisation corrects), log-normal pixel noise, intensity-dependent dropout, partial
  volume at the tissue edge, CHCA matrix peaks strong off tissue, rare off-tissue traces, ppm
  mass error and random noise peaks (processed imzML);
* the tissue is where the real spots are (a pixel is tissue within ``tissue_radius_um`` of a
  spot); between spots the expression-driven part is interpolated with a Gaussian kernel;
* the raster lives in its own frame: MSI µm → ST µm is a rotation by ``rotation_deg`` (random
  in ±``max_rotation_deg`` when None) plus a translation, saved in the truth folder.

Outputs (:func:`write_semireal_sample`): the ST section as ``.h5ad`` (raw counts, µm
coordinates), the MSI as ``.imzML``/``.ibd``, and a truth folder (links, metabolite roles, true
log-abundance at the spots, true pixel positions, transform, design with the label).
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .demo import GZIP_NO_TIMESTAMP, MATRIX_MZ, PROTON, observe_msi, write_simulated_imzml
from .fields import SmoothField

log = logging.getLogger(__name__)

LABEL = "SIMULATED MSI paired with a REAL spatial transcriptomics section (semi-real data)"
ST_UNIT_UM = 200.0  # legacy ST array: 200 µm centre-to-centre
ST_SPOT_DIAMETER_UM = 100.0
PASTE_FOLDER = "st_breast_cancer_4_serial_sections_paste"
METACHAT_FILE = "metabolite_sensor_metachatdb/MetaChatDB_human.tsv"


class SemiRealDataMissing(FileNotFoundError):
    """The real section files are not where they were expected."""


@dataclass
class SemiRealParams:
    """Everything that defines one semi-real sample besides the real section itself."""

    seed: int = 0
    n_linked: int = 40
    n_background: int = 20
    max_genes_per_metabolite: int = 5
    min_gene_detection: float = 0.3  # a linked gene is detected in >= this fraction of spots
    link_sd: float = 0.8  # SD of the expression-driven log-abundance
    own_sd: float = 0.35  # SD of each linked metabolite's own (unexplained) smooth field
    background_sd: float = 0.8  # SD of a background ion's smooth field
    negative_link_fraction: float = 0.25
    expression_smoothing_um: float = 150.0
    interpolation_um: float = 120.0
    tissue_radius_um: float = 150.0
    msi_pixel_size_um: float = 50.0
    pixel_noise_sd: float = 0.35
    ion_yield_sd: float = 0.8  # per-metabolite ion yield (log scale)
    ionisation_sd: float = 0.25  # per-pixel ionisation factor (log scale)
    dropout: float = 0.3
    rotation_deg: float | None = None
    max_rotation_deg: float = 20.0
    margin_um: float = 300.0
    mz_error_ppm: float = 2.0
    noise_peaks_per_pixel: float = 2.0
    imzml_mode: str = "processed"


# ----------------------------------------------------------------------------- real inputs
def read_paste_section(folder: str | Path, section: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One legacy-ST section of the PASTE sample data: raw counts (spots × genes, index
    ``"<x>x<y>"``) and array coordinates (spots × 2, ST array units)."""
    folder = Path(folder)
    expr, coor = folder / f"slice{section}.csv.gz", folder / f"slice{section}_coor.csv"
    for f in (expr, coor):
        if not f.is_file():
            raise SemiRealDataMissing(
                f"semi-real data: {f} is missing; it is the real ST breast-cancer section "
                f"{section} of shared/data/real/{PASTE_FOLDER} (see its SOURCE.md); pass the "
                "folder that holds slice<N>.csv.gz and slice<N>_coor.csv")
    counts = pd.read_csv(expr, index_col=0)
    xy = pd.read_csv(coor, header=None).to_numpy(float)
    if len(xy) != len(counts):
        raise ValueError(f"{coor}: {len(xy)} coordinates for {len(counts)} spots in {expr}")
    counts.index = counts.index.astype(str)
    return counts.astype(np.int32), xy


def _metabolite_table() -> pd.DataFrame:
    t = pd.read_csv(resources.files("spatialfuse.resources") / "metabolites.tsv", sep="\t")
    t = t.drop_duplicates("formula")
    t = t.assign(mz=t["monoisotopic_mass"] + PROTON)
    return t[(t["mz"] > 80) & (t["mz"] < 1000)].reset_index(drop=True)


def candidate_links(genes, metachat: str | Path | None = None) -> dict[str, list[str]]:
    """Metabolite name → genes of ``genes`` linked to it: genes that share a pathway of the
    shipped Reactome/WikiPathways table with it (smallest pathways first) and, when the
    MetaChatDB human table is given, its sensor genes (first)."""
    from ..interpret.pathways import load_pathways, metabolite_key

    mets = _metabolite_table()
    gene_set = set(map(str, genes))
    table = load_pathways(None)
    comp = table[table["analyte_type"] == "compound"]
    gen = table[(table["analyte_type"] == "gene") & table["name"].isin(gene_set)]
    size = table.groupby("pathway_id").size()
    genes_of = gen.groupby("pathway_id")["name"].apply(list)
    sensors: dict[str, list[str]] = {}
    if metachat is not None:
        mc = pd.read_csv(metachat, sep="\t", usecols=["Sensor.Gene", "Metabolite.Name"])
        for name, grp in mc.groupby(mc["Metabolite.Name"].map(metabolite_key)):
            sensors[name] = sorted(set(grp["Sensor.Gene"]) & gene_set)
    out: dict[str, list[str]] = {}
    for name in mets["name"]:
        key = metabolite_key(name)
        pids = sorted(set(comp.loc[comp["key"] == key, "pathway_id"]), key=lambda p: (size[p], p))
        cands = list(sensors.get(key, []))
        for pid in pids:
            cands += [g for g in sorted(genes_of.get(pid, [])) if g not in cands]
        if cands:
            out[str(name)] = cands
    return out


# ----------------------------------------------------------------------------- simulation
def _gauss_smooth(values: np.ndarray, src_xy: np.ndarray, dst_xy: np.ndarray, sigma_um: float,
                  radius: float = 3.0) -> np.ndarray:
    """Gaussian-kernel weighted mean of ``values`` (rows at ``src_xy``) at ``dst_xy``; a point
    with no source within ``radius`` sigma takes its nearest source's value."""
    tree = cKDTree(src_xy)
    out = np.zeros((len(dst_xy), values.shape[1]))
    wsum = np.zeros(len(dst_xy))
    pairs = tree.query_ball_point(dst_xy, radius * sigma_um)
    for i, nb in enumerate(pairs):
        if not nb:
            continue
        d2 = np.sum((src_xy[nb] - dst_xy[i]) ** 2, axis=1)
        w = np.exp(-0.5 * d2 / sigma_um**2)
        out[i] = w @ values[nb]
        wsum[i] = w.sum()
    empty = wsum == 0
    if empty.any():
        _, j = tree.query(dst_xy[empty])
        out[empty] = values[j]
        wsum[empty] = 1.0
    return out / wsum[:, None]


def _pick_ions(rng, table: pd.DataFrame, names: list[str], n: int, taken: list[float],
               min_sep_ppm: float = 60.0) -> list[int]:
    chosen: list[int] = []
    pool = [i for i in rng.permutation(len(table)) if table["name"].iloc[i] in set(names)]
    for i in pool:
        mz = float(table["mz"].iloc[i])
        if np.all(np.abs(np.asarray(taken) - mz) / mz * 1e6 > min_sep_ppm):
            chosen.append(int(i))
            taken.append(mz)
        if len(chosen) == n:
            break
    return chosen


def simulate_semireal(counts: pd.DataFrame, array_xy: np.ndarray, p: SemiRealParams,
                      metachat: str | Path | None = None, section: str = "section") -> dict:
    """Simulate the MSI raster paired with one real ST section (see the module docstring).

    ``counts``: real raw counts (spots × genes); ``array_xy``: ST array coordinates. Returns
    arrays and tables for :func:`write_semireal_sample`.
    """
    rng = np.random.default_rng([p.seed, zlib.crc32(section.encode())])
    counts = counts.loc[:, counts.sum(0) > 0]
    xy = (array_xy - array_xy.min(0)) * ST_UNIT_UM + p.margin_um + ST_UNIT_UM
    C = counts.to_numpy(np.float64)
    L = np.log1p(C / np.maximum(C.sum(1, keepdims=True), 1) * 1e4)
    genes = counts.columns.astype(str)
    detected = (C > 0).mean(0) >= p.min_gene_detection

    # ---- links: real metabolites ↔ measured genes
    table = _metabolite_table()
    cands = candidate_links(genes[detected], metachat)
    linkable = [n for n, g in cands.items() if len(g) >= 2]
    taken = list(MATRIX_MZ)
    linked = _pick_ions(rng, table, linkable, p.n_linked, taken)
    rest = [n for n in table["name"] if n not in set(table["name"].iloc[linked])]
    background = _pick_ions(rng, table, rest, p.n_background, taken)
    if len(linked) < 2:
        raise ValueError(f"{section}: fewer than 2 metabolites link to genes of the section")
    ions = table.iloc[linked + background].reset_index(drop=True)
    roles = np.array(["linked"] * len(linked) + ["background"] * len(background))
    M = len(ions)

    # ---- expression-driven log-abundance at the spots
    gidx = {g: i for i, g in enumerate(genes)}
    Ls = _gauss_smooth(L, xy, xy, p.expression_smoothing_um)
    Z = (Ls - Ls.mean(0)) / np.maximum(Ls.std(0), 1e-9)
    drive = np.zeros((len(xy), M))
    link_rows = []
    for m in range(len(linked)):
        name = ions["name"].iloc[m]
        gs = cands[name][: p.max_genes_per_metabolite]
        sign = np.where(rng.random(len(gs)) < p.negative_link_fraction, -1.0, 1.0)
        w = sign * rng.uniform(0.5, 1.5, len(gs))
        d = Z[:, [gidx[g] for g in gs]] @ w
        drive[:, m] = p.link_sd * (d - d.mean()) / max(d.std(), 1e-9)
        link_rows += [{"gene": g, "metabolite": name, "mz": float(ions["mz"].iloc[m]),
                       "sign": float(np.sign(wi)), "weight": float(wi)} for g, wi in zip(gs, w)]
    own = [SmoothField.random(rng, (400.0, 1500.0)) for _ in range(M)]
    own_sd = np.where(roles == "linked", p.own_sd, p.background_sd)
    base = rng.normal(6.0, p.ion_yield_sd, M)

    def logmean(points, drive_at_points):
        own_v = np.stack([f(points) for f in own], 1)
        return base[None, :] + drive_at_points + own_sd[None, :] * own_v

    # ---- the MSI raster (own frame) and its true position in the ST frame
    rot = float(rng.uniform(-p.max_rotation_deg, p.max_rotation_deg)) if p.rotation_deg is None \
        else float(p.rotation_deg)
    t = np.deg2rad(rot)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    px = p.msi_pixel_size_um
    centre = (xy.min(0) + xy.max(0)) / 2
    half = np.max(np.linalg.norm(xy - centre, axis=1)) + p.margin_um
    n_side = int(np.ceil(2 * half / px))
    u_c = np.full(2, (n_side + 1) / 2 * px)
    b = centre + rng.normal(0, 50.0, 2) - R @ u_c
    ii, jj = np.meshgrid(np.arange(1, n_side + 1), np.arange(1, n_side + 1), indexing="xy")
    pix = np.stack([ii.ravel(), jj.ravel()], 1)
    u = pix * px
    pix_st = u @ R.T + b
    tree = cKDTree(xy)
    sub = (np.arange(3) + 0.5) / 3 - 0.5
    frac = np.zeros(len(u))
    for dx in sub:
        for dy in sub:
            d, _ = tree.query((u + np.array([dx, dy]) * px) @ R.T + b)
            frac += d <= p.tissue_radius_um
    frac /= len(sub) ** 2
    on = frac > 0
    drive_px = np.zeros((len(u), M))
    drive_px[on] = _gauss_smooth(drive, xy, pix_st[on], p.interpolation_um)
    eta = logmean(pix_st, drive_px)
    intens = observe_msi(rng, eta, frac, base, p.dropout, ionisation_sd=p.ionisation_sd,
                         noise_sd=p.pixel_noise_sd)
    true_spots = logmean(xy, drive)
    log.info("semi-real %s: %d real spots x %d genes; SIMULATED MSI %d pixels (%d on tissue), "
             "%d linked + %d background ions, rotation %.1f deg", section, len(xy), len(genes),
             len(u), int(on.sum()), len(linked), len(background), rot)
    barcodes = [f"{section}_{i}" for i in counts.index]
    return {
        "params": p, "section": section, "counts": counts, "barcodes": barcodes, "st_xy_um": xy,
        "ions": ions.assign(role=roles), "links": pd.DataFrame(link_rows),
        "true_log_abundance": pd.DataFrame(true_spots, index=barcodes, columns=ions["name"]),
        "msi_pixels": pd.DataFrame({
            "x": pix[:, 0], "y": pix[:, 1], "msi_x_um": u[:, 0], "msi_y_um": u[:, 1],
            "st_x_um": pix_st[:, 0], "st_y_um": pix_st[:, 1], "tissue_fraction": frac}),
        "mz_true": np.r_[ions["mz"].to_numpy(), np.array(MATRIX_MZ)],
        "intensities": intens,
        "transform": {"rotation_deg": rot, "reflect": False, "scale": 1.0,
                      "affine": np.r_[np.c_[R, b], [[0, 0, 1]]].tolist(), "warp_um": 0.0,
                      "msi_pixel_size_um": px, "label": LABEL,
                      "description": "ST_um = A @ [msi_x_um, msi_y_um, 1]"},
    }


def write_semireal_sample(sim: dict, st_path: str | Path, imzml_path: str | Path,
                          truth_dir: str | Path, source: str = "") -> None:
    """Write the real ST section (``.h5ad``: raw counts in ``X`` and ``layers['counts']``,
    ``obsm['spatial']`` in µm) with its simulated MSI (``.imzML``/``.ibd``) and truth folder,
    each labelled as semi-real (real ST, SIMULATED MSI)."""
    import anndata as ad
    import scipy.sparse as sp

    from ..constants import Key

    p: SemiRealParams = sim["params"]
    rng = np.random.default_rng([p.seed, zlib.crc32(sim["section"].encode()), 1])
    st_path, imzml_path, truth = Path(st_path), Path(imzml_path), Path(truth_dir)
    for d in (st_path.parent, imzml_path.parent, truth):
        d.mkdir(parents=True, exist_ok=True)
    X = sp.csr_matrix(sim["counts"].to_numpy(np.float32))
    st = ad.AnnData(X=X, obs=pd.DataFrame({"array_xy": sim["counts"].index}, index=sim["barcodes"]),
                    var=pd.DataFrame(index=sim["counts"].columns.astype(str)))
    st.layers[Key.layers.counts] = X.copy()
    st.obsm[Key.obsm.spatial] = sim["st_xy_um"]
    st.uns[Key.uns.spatialfuse] = {
        "spatial_units": "um", "platform": "ST (Stahl et al. 2016), real",
        "spot_diameter_um": ST_SPOT_DIAMETER_UM, "spot_shape": "disk",
        "semireal": LABEL, "source": source or "PASTE sample data (Stahl et al. 2016)"}
    st.write_h5ad(st_path)
    coords = sim["msi_pixels"][["x", "y"]].to_numpy()
    inten, mz_true = sim["intensities"], sim["mz_true"]
    write_simulated_imzml(imzml_path, coords, mz_true, inten, p, rng)
    (imzml_path.parent / "SIMULATED_MSI.txt").write_text(
        f"{imzml_path.name}: {LABEL}.\nThe MSI raster is simulated from the real expression "
        f"of the paired ST section ({source or 'PASTE sample data, Stahl et al. 2016'}); it is "
        "not a measurement. Truth: see the truth folder.\n")
    sim["msi_pixels"].to_csv(truth / "msi_pixels.tsv.gz", sep="\t", index=False,
                             compression=GZIP_NO_TIMESTAMP)
    sim["links"].to_csv(truth / "links.tsv", sep="\t", index=False)
    sim["ions"].to_csv(truth / "metabolites.tsv", sep="\t", index=False)
    sim["true_log_abundance"].to_csv(truth / "true_log_abundance.tsv.gz", sep="\t",
                                     compression=GZIP_NO_TIMESTAMP)
    (truth / "transform.json").write_text(json.dumps(sim["transform"], indent=2))
    design = {"label": LABEL, "section": sim["section"], "source": source,
              "params": asdict(p), "n_spots": int(len(sim["barcodes"])),
              "n_linked": int((sim["ions"]["role"] == "linked").sum()),
              "n_background": int((sim["ions"]["role"] == "background").sum())}
    (truth / "design.json").write_text(json.dumps(design, indent=2))


def write_semireal_samples(data_dir: str | Path, out_dir: str | Path, sections=(1, 2, 3, 4),
                           params: SemiRealParams | None = None,
                           metachat: str | Path | None = None) -> Path:
    """Write every requested real section with its simulated MSI under ``out_dir`` and a
    samples sheet (``out_dir/samples.tsv``) for the pipeline; returns the sheet's path."""
    p = params or SemiRealParams()
    out = Path(out_dir).resolve()
    rows = []
    for s in sections:
        name = f"breast{s}_semireal"
        counts, axy = read_paste_section(data_dir, int(s))
        sim = simulate_semireal(counts, axy, p, metachat=metachat, section=name)
        d = out / name
        st, imz, tr = d / "st.h5ad", d / f"{name}_SIMULATED_msi.imzML", d / "truth"
        write_semireal_sample(sim, st, imz, tr, source=f"{PASTE_FOLDER}/slice{s} (real ST)")
        rows.append({"sample": name, "st": str(st), "msi": str(imz),
                     "msi_pixel_size_um": p.msi_pixel_size_um, "landmarks": "",
                     "condition": "semireal", "batch": "ST2016", "truth": str(tr)})
    sheet = out / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(
        description="Write semi-real samples: REAL ST breast-cancer sections paired with "
        "SIMULATED MSI rasters, plus a samples sheet.")
    ap.add_argument("--data", default="../shared/data/real",
                    help="folder holding st_breast_cancer_4_serial_sections_paste/ (and "
                    "metabolite_sensor_metachatdb/, used when present)")
    ap.add_argument("--out", default="results/semireal")
    ap.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(a.data)
    mc = data / METACHAT_FILE
    sheet = write_semireal_samples(data / PASTE_FOLDER, a.out, a.sections,
                                   SemiRealParams(seed=a.seed),
                                   metachat=mc if mc.is_file() else None)
    print(f"wrote {sheet} ({LABEL})")


if __name__ == "__main__":
    main()
