"""Stage 8: the pipeline's single-file HTML summary (offline: images embedded, no CDN).

Opens with the answer (flags, per-sample registration quality, domain agreement, best
metabolite–gene links), then the figures, the full metrics table (sortable) and provenance:
pipeline version, package versions, configuration, seeds, input checksums, run time per rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

PACKAGES = ["spatialfuse", "numpy", "scipy", "pandas", "anndata", "mudata", "scanpy",
            "scikit-learn", "torch", "matplotlib", "pyimzML", "snakemake"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#0b3d5c;color:#fff;padding:18px 28px}header h1{margin:0;font-size:1.5em}
header p{margin:4px 0 0;opacity:.85}main{padding:10px 28px 40px;max-width:1300px}
h2{border-bottom:2px solid #0b3d5c;padding-bottom:4px;margin-top:34px}
.flag{background:#fde2e1;border-left:6px solid #c0392b;padding:10px 14px;margin:10px 0}
.ok{background:#e3f4e8;border-left:6px solid #2e7d32;padding:10px 14px;margin:10px 0}
table{border-collapse:collapse;font-size:.86em;margin:8px 0;background:#fff}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eef3f7;cursor:pointer}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
img{max-width:100%;border:1px solid #ddd;background:#fff;margin:6px 0}
figure{margin:12px 0}figcaption{font-size:.85em;color:#555;max-width:1000px}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;font-size:.8em;max-height:420px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('sorted-asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
      th.classList.add(asc?'sorted-asc':'sorted-desc');
      var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=a.cells[i].innerText,y=b.cells[i].innerText;
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""


def img_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(df: pd.DataFrame, sortable: bool = True, float_fmt: str = "{:.4g}") -> str:
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for v in r.to_numpy():
            if isinstance(v, float):
                cells.append(f'<td class="num">{float_fmt.format(v)}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def git_version(repo: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=repo,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown (not a git checkout)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def sha256_path(path: str | Path) -> list[tuple[str, str, int]]:
    """(file, sha256, bytes) of a file, or of every file under a folder."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        out.append((str(f), h.hexdigest(), f.stat().st_size))
    return out


def input_checksums(samples: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for sid, info in samples.items():
        for col in ("st", "msi", "landmarks"):
            v = info.get(col)
            if not v:
                continue
            paths = [v]
            if col == "msi" and str(v).lower().endswith(".imzml"):
                paths.append(str(Path(v).with_suffix(".ibd")))
            for p in paths:
                if Path(p).exists():
                    for f, h, n in sha256_path(p):
                        rows.append((sid, col, f, n, h))
    return pd.DataFrame(rows, columns=["sample", "input", "file", "bytes", "sha256"])


def rule_runtimes(bench_dir: str | Path = "results/benchmarks") -> pd.DataFrame:
    rows = []
    for f in sorted(Path(bench_dir).glob("*/*.tsv")):
        try:
            b = pd.read_csv(f, sep="\t")
        except Exception:
            continue
        if len(b):
            rows.append((f.parent.name, f.stem, float(b["s"].iloc[-1]),
                         float(b.get("max_rss", pd.Series([float("nan")])).iloc[-1])))
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])


def build_summary(
    *,
    title: str,
    config: dict,
    samples: dict[str, dict],
    metrics: pd.DataFrame,
    align_qc: dict[str, dict],
    interpret: dict[str, dict],
    figures: dict[str, list[tuple[str, str, str]]],
    out_path: str | Path,
) -> None:
    """Write the HTML summary. ``figures``: section → [(png path, alt, caption)]."""
    now = dt.datetime.now().isoformat(timespec="seconds")
    flags = []
    for s, q in align_qc.items():
        for w in q.get("warnings", []):
            flags.append(f"<b>{html.escape(s)}</b> — registration: {html.escape(w)}")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<header><h1>{html.escape(title)}</h1><p>{len(samples)} sample(s) · generated {now} · "
             f"SpatialFuse {html.escape(git_version())}</p></header><main>"]
    if flags:
        parts.append("<div class='flag'><b>Needs attention</b><ul>" +
                     "".join(f"<li>{f}</li>" for f in flags) + "</ul></div>")
    else:
        parts.append("<div class='ok'>All steps finished; no registration was flagged.</div>")

    # at a glance
    glance = []
    for s in samples:
        q = align_qc.get(s, {})
        row = {"sample": s, "spots paired": q.get("spots_covered"),
               "tissue Dice": q.get("tissue_dice")}
        if "truth_error_um_median" in q:
            row["registration error (µm, median)"] = q["truth_error_um_median"]
        dm = metrics.query("sample == @s and stage == 'domains' and metric == 'ari'")
        for _, r in dm.iterrows():
            row[f"ARI {r['model']}"] = r["value"]
        it = interpret.get(s, {})
        top = (it.get("top_associations") or [{}])[0]
        if top:
            ann = (top.get("annotation") or "").split(";")[0]
            row["top metabolite–gene link"] = (f"{top.get('metabolite_feature')}"
                                               f"{' (' + ann + ')' if ann else ''} ~ {top.get('gene')}"
                                               f" (r={top.get('r', float('nan')):.2f})")
        lr = it.get("link_recovery")
        if lr:
            row["true links recovered"] = f"{lr['true_positives']}/{lr['true_links_tested']}"
        glance.append(row)
    parts.append("<h2>At a glance</h2>" + table_html(pd.DataFrame(glance)))

    for section, figs in figures.items():
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for path, alt, cap in figs:
            if Path(path).exists():
                parts.append(f"<figure>{img_tag(path, alt)}<figcaption>{html.escape(cap)}"
                             f"</figcaption></figure>")

    parts.append("<h2>Top metabolite–gene associations</h2>")
    for s, it in interpret.items():
        top = pd.DataFrame(it.get("top_associations", []))
        if len(top):
            parts.append(f"<details open><summary>{html.escape(s)}</summary>{table_html(top)}</details>")

    parts.append("<h2>All metrics</h2><details><summary>metrics.tsv "
                 f"({len(metrics)} rows; click a header to sort)</summary>"
                 f"{table_html(metrics)}</details>")

    parts.append("<h2>Provenance</h2>")
    vers = package_versions()
    parts.append("<h3>Versions</h3>" + table_html(
        pd.DataFrame(sorted(vers.items()), columns=["package", "version"]), sortable=False))
    seeds = {"seed": config.get("seed")}
    parts.append(f"<h3>Seeds and device</h3><pre>{html.escape(json.dumps(seeds))}; device: "
                 f"{html.escape(str(config.get('device')))}</pre>")
    parts.append("<h3>Configuration (after defaults)</h3><pre>" +
                 html.escape(yaml.safe_dump(config, sort_keys=False)) + "</pre>")
    parts.append("<h3>Samples sheet</h3>" + table_html(
        pd.DataFrame.from_dict(samples, orient="index").reset_index(drop=True), sortable=False))
    cs = input_checksums(samples)
    parts.append("<h3>Input checksums (SHA-256)</h3><details><summary>"
                 f"{len(cs)} files</summary>{table_html(cs)}</details>")
    rt = rule_runtimes()
    if len(rt):
        parts.append(f"<h3>Run time per rule</h3><p>Total {rt['seconds'].sum():.0f} s of job time."
                     f"</p>{table_html(rt)}")
    parts.append(f"</main><script>{_JS}</script></body></html>")
    Path(out_path).write_text("\n".join(parts), encoding="utf-8")
