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


def spot_size(xy: np.ndarray, ax, diameter_um: float = 55.0) -> float:
    """Marker size (points²) so a scatter marker spans ``diameter_um`` on an equal-aspect ``ax``
    whose limits are the data range plus a 100 µm margin."""
    pos = ax.get_position()
    w_in, h_in = ax.figure.get_size_inches()
    if len(xy):
        span_x, span_y = np.ptp(xy[:, 0]) + 200, np.ptp(xy[:, 1]) + 200
    else:
        span_x = span_y = 1000.0
    pt_per_um = min(w_in * 72 * pos.width / span_x, h_in * 72 * pos.height / span_y)
    return max(1.0, (diameter_um * pt_per_um) ** 2)


def aligned_pixel_um(qc: dict) -> float:
    """Side (µm) of an MSI pixel in the ST frame: its raster step × the registration's mean
    scale, from the align stage's ``qc.json``."""
    return float(qc.get("msi_pixel_size_um", 10.0)) * float(
        qc.get("transform", {}).get("mean_scale", 1.0))


def plot_labels(ax, xy: np.ndarray, labels, title: str | None = None, diameter_um: float = 55.0,
                legend: bool = True):
    """Spots coloured by integer domain label (colours from :func:`domain_colours`)."""
    labels = np.asarray(labels).astype(int)
    cols = domain_colours(labels)
    s = spot_size(xy, ax, diameter_um)
    for lab, c in cols.items():
        m = labels == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=s, c=c, label=str(lab), linewidths=0)
    _frame(ax, title)
    if legend:
        ax.legend(title="domain", fontsize=7, title_fontsize=8, markerscale=0.8, frameon=False,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))


def plot_values(ax, xy: np.ndarray, values, title: str | None = None, diameter_um: float = 55.0,
                cmap: str = "viridis", label: str | None = None, marker: str = "o"):
    s = spot_size(xy, ax, diameter_um)
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=s, c=values, cmap=cmap, linewidths=0, marker=marker)
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
