"""HTML building blocks of the summary page: self-contained (inline CSS, JS, SVG; PNGs as data
URIs), so the page opens offline from a single file, e-mailed or archived."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import VISIUM_SPOT_DIAMETER_UM
from ..plots import PALETTE

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2327;
 background:#f6f7f9;line-height:1.45}
header{background:#0b3d5c;color:#fff;padding:18px 28px 12px}
header h1{margin:0;font-size:1.55em}header p{margin:4px 0 0;opacity:.85;font-size:.92em}
nav{background:#0b3d5c;padding:0 28px 10px;position:sticky;top:0;z-index:5}
nav a{color:#cfe3f1;margin-right:14px;font-size:.88em;text-decoration:none}
nav a:hover{color:#fff;text-decoration:underline}
main{padding:6px 28px 48px;max-width:1400px}
h2{border-bottom:2px solid #0b3d5c;padding-bottom:4px;margin-top:36px;scroll-margin-top:44px}
h3{margin:22px 0 6px}
.flag{background:#fdecea;border-left:6px solid #b2182b;padding:10px 16px;margin:14px 0}
.flag h2{border:0;margin:0 0 4px;padding:0;color:#b2182b;font-size:1.15em}
.flag li{margin:3px 0}
.ok{background:#e6f4ea;border-left:6px solid #2e7d32;padding:10px 16px;margin:14px 0}
.cards{display:flex;flex-wrap:wrap;gap:16px;margin-top:10px}
.card{background:#fff;border:1px solid #d6dbe0;border-radius:6px;padding:12px 14px;
 flex:1 1 430px;max-width:680px}
.card.flagged{border:2px solid #b2182b}
.card h3{margin:0 0 6px;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.badge{font-size:.72em;font-weight:600;padding:2px 7px;border-radius:10px;background:#e3e8ee;
 color:#333}
.badge.bad{background:#b2182b;color:#fff}.badge.good{background:#2e7d32;color:#fff}
.kv{display:grid;grid-template-columns:fit-content(40%) 1fr;gap:2px 12px;font-size:.88em;margin:8px 0}
.kv dt{color:#555}.kv dd{margin:0;font-variant-numeric:tabular-nums}
.layers button{font:inherit;font-size:.8em;border:1px solid #9aa5b1;background:#fff;
 border-radius:4px;padding:2px 8px;margin:0 4px 4px 0;cursor:pointer}
.layers button.on{background:#0b3d5c;color:#fff;border-color:#0b3d5c}
svg.spotmap{width:100%;max-width:460px;height:auto;background:#fff;display:block}
svg.spotmap [data-l]:hover{stroke:#000;stroke-width:var(--hw,8)}
.hover{font-size:.8em;color:#333;min-height:1.3em;font-variant-numeric:tabular-nums}
.legend{font-size:.78em;display:flex;flex-wrap:wrap;gap:4px 10px;margin:4px 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:3px;
 vertical-align:-1px}
table{border-collapse:collapse;font-size:.84em;margin:8px 0;background:#fff}
th,td{border:1px solid #d0d5da;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef3f7;position:sticky;top:40px}
table.sortable th{cursor:pointer}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.links td:first-child{font-weight:600}
img{max-width:100%;height:auto;border:1px solid #d6dbe0;background:#fff;margin:6px 0}
figure{margin:14px 0 22px}
figcaption{font-size:.86em;color:#444;max-width:1000px}
pre{background:#fff;border:1px solid #d6dbe0;padding:8px;overflow:auto;font-size:.8em;
 max-height:420px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
input.filter{font:inherit;font-size:.85em;padding:3px 6px;width:280px;margin:4px 0}
.muted{color:#666;font-size:.88em}
@media print{nav{display:none}details{display:block}}
"""

JS = """
(function(){
function cellValue(td){var v=td.getAttribute('data-v');return v!==null?v:td.textContent;}
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){
    th.title='click to sort';
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('sorted-asc');
      t.querySelectorAll('thead th').forEach(function(h){
        h.classList.remove('sorted-asc','sorted-desc')});
      th.classList.add(asc?'sorted-asc':'sorted-desc');
      var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=cellValue(a.cells[i]),y=cellValue(b.cells[i]);
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:
          (isNaN(nx)&&isNaN(ny)?x.localeCompare(y):(isNaN(nx)?1:-1));
        return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
document.querySelectorAll('input.filter').forEach(function(inp){
  var t=document.getElementById(inp.getAttribute('data-table'));if(!t)return;
  inp.addEventListener('input',function(){var q=inp.value.toLowerCase();
    Array.prototype.forEach.call(t.tBodies[0].rows,function(r){
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});
});
document.querySelectorAll('.spotmap-box').forEach(function(box){
  var svg=box.querySelector('svg');var info=box.querySelector('.hover');
  var dots=svg.querySelectorAll('[data-l]');
  box.querySelectorAll('.layers button').forEach(function(b){
    b.addEventListener('click',function(){var k=parseInt(b.getAttribute('data-i'),10);
      box.querySelectorAll('.layers button').forEach(function(o){o.classList.remove('on')});
      b.classList.add('on');
      dots.forEach(function(c){var l=c.getAttribute('data-l').split(',')[k];
        c.setAttribute('class',l===''?'dn':'d'+l);});
    });
  });
  svg.addEventListener('mouseover',function(e){
    var t=e.target.querySelector?e.target.querySelector('title'):null;
    if(t&&info)info.textContent=t.textContent;});
});
})();
"""


def img_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(path: str | Path, alt: str, caption: str = "", fig_id: str = "") -> str:
    """An embedded PNG with its caption (``caption`` is HTML); empty if the file is absent."""
    if not Path(path).exists():
        return ""
    ident = f' id="{html.escape(fig_id)}"' if fig_id else ""
    return f"<figure{ident}>{img_tag(path, alt)}<figcaption>{caption}</figcaption></figure>"


def _fmt(v, fmt: str | None = None) -> tuple[str, str]:
    """(display text, sort value) of a cell; ``fmt`` (e.g. ``"{:.4f}"``) overrides numbers."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "", ""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), str(int(v))
    if isinstance(v, (int, np.integer)):
        return (fmt.format(v) if fmt else f"{v:,}"), str(v)
    if isinstance(v, (float, np.floating)):
        a = abs(v)
        if fmt:
            txt = fmt.format(v)
        elif float(v).is_integer() and a < 1e12:
            txt = f"{int(v):,}"
        elif a and (a < 1e-3 or a >= 1e6):
            txt = f"{v:.2e}"
        else:
            txt = f"{v:.4g}"
        return txt, repr(float(v))
    return str(v), ""


def table_html(df: pd.DataFrame, sortable: bool = True, table_id: str = "",
               css_class: str = "", formats: dict[str, str] | None = None) -> str:
    """An HTML table; numbers right-aligned and sortable by value (``data-v``)."""
    classes = " ".join(c for c in ("sortable" if sortable else "", css_class) if c)
    attrs = (f' id="{html.escape(table_id)}"' if table_id else "") + \
        (f' class="{classes}"' if classes else "")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    fmts = [(formats or {}).get(c) for c in df.columns]
    rows = []
    for r in df.itertuples(index=False):
        cells = []
        for v, f in zip(r, fmts):
            txt, key = _fmt(v, f)
            if key:
                cells.append(f'<td class="num" data-v="{key}">{html.escape(txt)}</td>')
            else:
                cells.append(f"<td>{html.escape(txt)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def filter_box(table_id: str, what: str = "rows") -> str:
    return (f'<input class="filter" type="search" data-table="{html.escape(table_id)}" '
            f'placeholder="filter {html.escape(what)}…" aria-label="filter {html.escape(what)}">')


_RST_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<b>\1</b>"),
    (re.compile(r"``(.+?)``"), r"<code>\1</code>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<i>\1</i>"),
]


def caption_html(text: str) -> str:
    """A caption written in (simple) reStructuredText for ``snakemake --report``, as HTML:
    paragraphs, **bold**, *italic* and ``literal``."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        p = html.escape(" ".join(para.split()))
        for pat, rep in _RST_INLINE:
            p = pat.sub(rep, p)
        out.append(p)
    return "<br>".join(out)


def palette_css() -> str:
    return "".join(f"svg.spotmap .d{i}{{fill:{c}}}" for i, c in enumerate(PALETTE)) + \
        "svg.spotmap .dn{fill:#cccccc}"


def _nice_bar(span: float) -> float:
    target = span / 4
    mag = 10 ** np.floor(np.log10(max(target, 1e-9)))
    return float(max(m * mag for m in (1, 2, 5) if m * mag <= target) if target >= mag else mag)


def spot_map_svg(spots: pd.DataFrame, layers: list[str], default: str, *, diameter_um: float = VISIUM_SPOT_DIAMETER_UM,
                 square: bool = False, max_spots: int = 5000, seed: int = 0, label: str = "") -> str:
    """An interactive spot map: every spot a circle of its true size (µm; ``square``: a square
    of that side, Visium HD bins) coloured by matched domain, hover for barcode, position and
    the domain of every layer, buttons to switch the layer (truth or a model). Above
    ``max_spots`` a seeded random subset is drawn (said below the map). ``spots``: barcode,
    x_um, y_um and one integer column per layer."""
    layers = [ly for ly in layers if ly in spots]
    if spots.empty or not layers:
        return "<p class='muted'>No spot map.</p>"
    n_all = len(spots)
    if n_all > max_spots:
        idx = np.sort(np.random.default_rng(seed).choice(n_all, max_spots, replace=False))
        spots = spots.iloc[idx]
    default = default if default in layers else layers[0]
    k0 = layers.index(default)
    xy = spots[["x_um", "y_um"]].to_numpy(float)
    r = diameter_um / 2
    pad = max(r * 2, 40.0)
    x0, y0 = xy.min(0) - pad
    w, h = np.ptp(xy, 0) + 2 * pad
    bar = _nice_bar(w)
    labs = spots[layers].astype("Int64")
    parts = [f'<svg class="spotmap" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'aria-label="{html.escape(label)}" style="--hw:{max(r * 0.35, 0.5):.1f}" '
             f'viewBox="{x0:.0f} {y0:.0f} {w:.0f} {h + 3 * pad:.0f}">']
    where = spots[["barcode", "x_um", "y_um"]].itertuples(index=False, name=None)
    for (bc, x, y), row in zip(where, labs.itertuples(index=False, name=None)):
        vals = ["" if pd.isna(v) else str(int(v)) for v in row]
        desc = "; ".join(f"{ly}: {v if v else '–'}" for ly, v in zip(layers, vals))
        cls = f"d{vals[k0]}" if vals[k0] else "dn"
        tag = "rect" if square else "circle"
        shape = (f'x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}"'
                 if square else f'cx="{x:.0f}" cy="{y:.0f}" r="{r:.1f}"')
        parts.append(f'<{tag} {shape} class="{cls}" '
                     f'data-l="{",".join(vals)}"><title>{html.escape(str(bc))} · x {x:.0f} µm, '
                     f'y {y:.0f} µm · domain {html.escape(desc)}</title></{tag}>')
    by = y0 + h + 1.6 * pad
    parts.append(f'<line x1="{x0 + pad:.0f}" y1="{by:.0f}" x2="{x0 + pad + bar:.0f}" y2="{by:.0f}" '
                 f'stroke="#222" stroke-width="{max(w / 150, 4):.0f}"/>'
                 f'<text x="{x0 + pad + bar + pad / 2:.0f}" y="{by + pad * 0.35:.0f}" '
                 f'font-size="{max(w / 28, 30):.0f}" fill="#222">{bar:g} µm</text></svg>')
    buttons = "".join(f'<button type="button" data-i="{i}" class="{"on" if i == k0 else ""}">'
                      f'{html.escape(ly)}</button>' for i, ly in enumerate(layers))
    present = sorted({int(v) for c in layers for v in labs[c].dropna()})
    legend = "".join(f'<span><i style="background:{PALETTE[d % len(PALETTE)]}"></i>{d}</span>'
                     for d in present)
    note = (f"<p class='muted'>{len(spots):,} of {n_all:,} spots drawn (a random subset).</p>"
            if n_all > len(spots) else "")
    return (f'<div class="spotmap-box"><div class="layers">{buttons}</div>{"".join(parts)}'
            f'<div class="legend">domain (matched): {legend}</div>'
            f'<div class="hover" aria-live="polite">hover a spot for its barcode and domains</div>'
            f"{note}</div>")
