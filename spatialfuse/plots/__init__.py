"""Figures (matplotlib, headless). Axes in µm, colour-blind-safe palettes, one domain colour
per label everywhere."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: Okabe–Ito (colour-blind safe), then Paul Tol's muted set for more than 8 labels
PALETTE = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
    "#AA4499", "#DDDDDD",
]


def domain_colours(labels) -> dict:
    labs = sorted({int(v) for v in np.asarray(labels)})
    return {lab: PALETTE[lab % len(PALETTE)] for lab in labs}


def _frame(ax, title: str | None = None):
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if title:
        ax.set_title(title, fontsize=10)


def spot_size(xy: np.ndarray, ax, diameter_um: float = 55.0) -> float:
    """Marker size (points²) so a scatter marker spans ``diameter_um`` on ``ax``."""
    fig = ax.figure
    span = np.ptp(xy[:, 0]) + 200 if len(xy) else 1000
    width_pt = fig.get_size_inches()[0] * 72 * ax.get_position().width
    d_pt = diameter_um / span * width_pt
    return max(1.0, d_pt**2)


def plot_labels(ax, xy: np.ndarray, labels, title: str | None = None, diameter_um: float = 55.0,
                legend: bool = True):
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


def savefig(fig, path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
