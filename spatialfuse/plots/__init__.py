"""Figures (matplotlib, headless): one shared style for every stage and cohort figure.

Axes in µm, colour-blind-safe palettes, and one colour per domain label everywhere (cohort
figures first renumber domains so that labels correspond across models and samples, see
:mod:`spatialfuse.report.domains`).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..constants import VISIUM_SPOT_DIAMETER_UM  # noqa: E402

#: Domains: Okabe–Ito (colour-blind safe), then Paul Tol's muted set for more than 8 labels
PALETTE = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
    "#AA4499", "#DDDDDD",
]
#: Samples, models and conditions: Paul Tol's "bright" set (colour-blind safe, distinct from
#: the domain palette's order so a sample colour is not mistaken for a domain)
CATEGORY_PALETTE = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"]

STYLE = {
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
plt.rcParams.update(STYLE)


def domain_colours(labels) -> dict:
    """Colour of every (integer) domain label: ``PALETTE[label]``, the same in every figure."""
    labs = sorted({int(v) for v in np.asarray(labels)})
    return {lab: PALETTE[lab % len(PALETTE)] for lab in labs}


def category_colours(names) -> dict:
    """Colour per sample / model / condition name, in the order given."""
    names = list(dict.fromkeys(names))
    return {n: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, n in enumerate(names)}


def domain_handles(labels, prefix: str = "") -> list:
    """Legend handles (one round marker per domain) for a figure-level legend."""
    return [Line2D([], [], marker="o", ls="", color=c, markersize=6, label=f"{prefix}{lab}")
            for lab, c in domain_colours(labels).items()]


def _frame(ax, title: str | None = None):
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if title:
        ax.set_title(title, fontsize=10)


def frame_limits(ax, xy: np.ndarray, margin_um: float = 100.0) -> None:
    """Equal aspect, y downwards, and limits at ``xy``'s range plus ``margin_um``."""
    ax.set_aspect("equal")
    if len(xy):
        ax.set_xlim(xy[:, 0].min() - margin_um, xy[:, 0].max() + margin_um)
        ax.set_ylim(xy[:, 1].max() + margin_um, xy[:, 1].min() - margin_um)


def spot_geometry(meta: dict | None) -> tuple[float, bool]:
    """The ST spot's diameter (µm; a bin's side) and whether it is a square (Visium HD bins,
    pooled squares) from an ST section's metadata (``uns['spatialfuse']``, or the ingest
    QC's ``st_meta``); a Visium spot (55 µm disk) when not given."""
    meta = meta or {}
    return float(meta.get("spot_diameter_um", VISIUM_SPOT_DIAMETER_UM)), meta.get("spot_shape") == "square"


def add_spots(ax, xy: np.ndarray, diameter_um: float = VISIUM_SPOT_DIAMETER_UM, square: bool = False, **kw):
    """ST spots as circles (``square``: squares, Visium HD bins) of ``diameter_um`` drawn in
    data units, so that they keep their true size against the axes in µm at any figure size
    or layout (a scatter marker's size is in points). ``kw`` go to the collection (``array``
    and ``cmap`` colour by value, as in a scatter). Returns the collection; the caller sets the
    limits (:func:`frame_limits`)."""
    from matplotlib.collections import EllipseCollection

    xy = np.asarray(xy, float)[:, :2]
    d = float(diameter_um)
    if square:
        return add_polygons(ax, xy, np.array([[-d, -d], [d, -d], [d, d], [-d, d]]) / 2, **kw)
    coll = EllipseCollection(d, d, 0.0, units="xy", offsets=xy, offset_transform=ax.transData,
                             **kw)
    ax.add_collection(coll, autolim=False)
    return coll


def add_polygons(ax, xy: np.ndarray, corners_um: np.ndarray, **kw):
    """Each point of ``xy`` drawn as the polygon ``corners_um`` about it, in data units (µm)."""
    from matplotlib.collections import PolyCollection

    xy = np.asarray(xy, float)[:, :2]
    coll = PolyCollection(xy[:, None, :] + np.asarray(corners_um, float)[None], **kw)
    ax.add_collection(coll, autolim=False)
    return coll


def aligned_pixel_um(qc: dict) -> float:
    """Side (µm) of an MSI pixel in the ST frame: its raster step × the registration's mean
    scale, from the align stage's ``qc.json``."""
    return float(qc.get("msi_pixel_size_um", 10.0)) * float(
        qc.get("transform", {}).get("mean_scale", 1.0))


def aligned_pixel_corners(qc: dict, native: np.ndarray | None = None,
                          aligned: np.ndarray | None = None) -> np.ndarray:
    """The four corners (µm, about the pixel's centre, ST frame) of one MSI pixel as registered:
    its raster steps in x and y (``qc['msi_pixel_size_xy_um']``) mapped by the linear part of
    the least-squares affine from the pixels' ``native`` positions to their ``aligned`` ones, so
    rotation, mirror, scales and shear all show (with a non-rigid warp, its average). Without
    the positions: a square of :func:`aligned_pixel_um`."""
    if native is None or aligned is None or len(native) < 3:
        h = aligned_pixel_um(qc) / 2
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    side = float(qc.get("msi_pixel_size_um", 10.0))
    px, py = (float(v) for v in qc.get("msi_pixel_size_xy_um", (side, side)))
    u = np.asarray(native, float)[:, :2]
    v = np.asarray(aligned, float)[:, :2]
    L = np.linalg.lstsq(u - u.mean(0), v - v.mean(0), rcond=None)[0]  # row vectors: v = u L
    return np.array([[-px, -py], [px, -py], [px, py], [-px, py]]) / 2 @ L


def overlay_panel(ax, st_xy: np.ndarray, msi_xy: np.ndarray, pixel_corners_um: np.ndarray,
                  spot_um: float, square_spots: bool = False, legend: bool = True) -> None:
    """MSI tissue pixels (each the quadrilateral ``pixel_corners_um`` about its centre, see
    :func:`aligned_pixel_corners`) under the ST spots (circles of ``spot_um``, or squares for
    Visium HD bins), both in data units (:func:`add_spots`)."""
    from matplotlib.patches import Patch

    st_xy, msi_xy = np.asarray(st_xy, float)[:, :2], np.asarray(msi_xy, float)[:, :2]
    add_polygons(ax, msi_xy, pixel_corners_um, facecolors="#E69F00", alpha=0.45, linewidths=0,
                 rasterized=True)
    add_spots(ax, st_xy, spot_um, square_spots, facecolors="none", edgecolors="#0072B2",
              linewidths=0.5, rasterized=len(st_xy) > 20_000)
    frame_limits(ax, np.vstack([st_xy, msi_xy]) if len(msi_xy) else st_xy)
    if legend:
        noun = "bins" if square_spots else "spots"
        handles = [Patch(facecolor="#E69F00", alpha=0.45, label="MSI tissue pixels (aligned)"),
                   Line2D([], [], ls="", marker="s" if square_spots else "o", mfc="none",
                          mec="#0072B2", ms=8, label=f"ST {noun}")]
        ax.legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.06),
                  ncol=2, frameon=False)


def plot_values(ax, xy: np.ndarray, values, title: str | None = None, diameter_um: float = VISIUM_SPOT_DIAMETER_UM,
                cmap: str = "viridis", label: str | None = None, marker: str = "o"):
    """Spots coloured by ``values`` (NaN: not drawn), ``marker`` 's' for square bins; returns
    the collection (for its colour limits)."""
    sc = add_spots(ax, xy, diameter_um, square=marker == "s",
                   array=np.asarray(values, float), cmap=cmap, linewidths=0)
    frame_limits(ax, xy)
    _frame(ax, title)
    cb = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    if label:
        cb.set_label(label, fontsize=8)
    return sc


def placeholder(path, message: str, size: tuple[float, float] = (6.0, 1.6)) -> None:
    """A small figure that says why there is nothing to plot (keeps the output contract)."""
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    savefig(fig, path)


def savefig(fig, path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
