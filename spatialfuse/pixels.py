"""MSI pixel sizes: square or rectangular, in µm.

An imzML gives ``pixel size x`` and ``pixel size y``; they differ on some rasters (DESI line
scans: the step along a line is set by the scan speed, the step between lines by the stage).
A pixel is then a rectangle of ``x × y`` µm, its centre at (index − 1) × size per axis. Stages
that need the geometry (the lattice of the raster, the exact-area weights, the truth error)
take the pair (:func:`pixel_xy`); a single length, where one is needed (errors in pixels,
marker sizes, pooling Visium HD bins to the pixel), is the side of the square of the same
area (:func:`pixel_side`). The MSI AnnData's ``uns['spatialfuse']`` holds both:
``pixel_size_um`` (that side) and ``pixel_size_xy_um`` ([x, y]).
"""

from __future__ import annotations

import numpy as np

#: Pixel sizes x and y that differ by more than this fraction make a rectangular pixel.
SQUARE_PIXEL_RTOL = 0.005


def pixel_xy(size) -> np.ndarray:
    """(x, y) pixel size in µm from one number (square), a pair, or an MSI ``uns['spatialfuse']``
    dict (``pixel_size_xy_um``, else ``pixel_size_um`` for both axes)."""
    if isinstance(size, dict):
        xy = size.get("pixel_size_xy_um")
        size = xy if xy is not None else size.get("pixel_size_um")
    a = np.asarray(size, float).ravel()
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2:
        raise ValueError(f"a pixel size is one number or an (x, y) pair, got {size!r}")
    return a


def pixel_side(size) -> float:
    """Side (µm) of the square with the pixel's area: the pixel size itself when square."""
    x, y = pixel_xy(size)
    return float(x) if x == y else float(np.sqrt(x * y))


def uns_entries(size) -> dict:
    """The two sizes an MSI ``uns['spatialfuse']`` records: ``pixel_size_um`` (the side of the
    square of the same area) and ``pixel_size_xy_um`` ([x, y])."""
    xy = pixel_xy(size)
    return {"pixel_size_um": pixel_side(xy), "pixel_size_xy_um": [float(v) for v in xy]}


def is_rectangular(size) -> bool:
    """Whether x and y differ by more than :data:`SQUARE_PIXEL_RTOL`."""
    x, y = pixel_xy(size)
    return bool(abs(x - y) > SQUARE_PIXEL_RTOL * max(x, y))


def describe(size) -> str:
    """'30 µm' for a square pixel, '40 × 80 µm' for a rectangular one."""
    x, y = pixel_xy(size)
    return f"{x:g} × {y:g} µm" if is_rectangular(size) else f"{x:g} µm"


def lattice_index(xy: np.ndarray, size) -> np.ndarray:
    """Integer (column, row) of each pixel centre (µm, own frame) on the raster's lattice,
    counted from the lowest centre on each axis."""
    xy = np.asarray(xy, float)
    return np.round((xy - xy.min(0)) / pixel_xy(size)).astype(int)


_PAIR_SEPARATORS = ("x", "X", "×", ",")


def parse_size(value) -> float | tuple[float, float] | None:
    """A pixel size as written in the samples sheet: empty → None, one positive number (square
    pixels), or ``x``×``y`` written ``40x80`` (also ``40 × 80``, ``40,80``). Anything else:
    ValueError naming what is wrong."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if text == "":
        return None
    parts = [text]
    for sep in _PAIR_SEPARATORS:
        if sep in text:
            parts = text.split(sep)
            break
    try:
        nums = [float(v) for v in parts]
    except ValueError:
        raise ValueError(f"'{value}' is not a number or an x×y pair such as 40x80") from None
    if len(nums) > 2 or not all(np.isfinite(v) and v > 0 for v in nums):
        raise ValueError(f"'{value}' must be one positive number or two (x×y, such as 40x80)")
    return nums[0] if len(nums) == 1 else (nums[0], nums[1])
