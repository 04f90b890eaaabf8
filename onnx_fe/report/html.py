"""HTML assembly for the report (pure: strings in, one self-contained page out).

The page holds its style, its one small script (sortable tables) and every image inline. A Content-Security-Policy
in the page itself forbids any request other than ``data:`` images, so the file stays offline wherever it is opened.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from .summary import fmt

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#fff;--panel:#f6f7f9;--accent:#1f5fa8;--set:#ff7f0e}
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg);font-size:15px;line-height:1.45}
body{margin:0}
header.top{padding:18px 28px 10px;border-bottom:1px solid var(--line);background:var(--panel)}
header.top h1{margin:0 0 4px;font-size:1.45rem;font-weight:650}
header.top .sub{color:var(--muted);font-size:.92rem}
nav.toc{position:sticky;top:0;z-index:2;background:rgba(255,255,255,.96);border-bottom:1px solid var(--line);
padding:6px 28px;font-size:.88rem}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap}
main{padding:6px 28px 40px;max-width:1500px}
section{margin-top:26px}
section>h2{font-size:1.18rem;margin:0 0 6px;padding-bottom:3px;border-bottom:2px solid var(--line)}
h3{font-size:1rem;margin:16px 0 6px}
h4{font-size:.92rem;margin:10px 0 4px;color:var(--muted);font-weight:600}
p.note,p.how{color:var(--muted);font-size:.88rem;margin:4px 0 8px;max-width:980px}
p.missing{color:#8a5a00;background:#fff8e6;border-left:3px solid #e0a800;padding:6px 10px;font-size:.88rem;
max-width:980px}
.runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px 28px}
.run-block{min-width:0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.8rem;margin:4px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600;position:relative}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲";font-size:.7em}
table.sortable th[aria-sort=descending]::after{content:" ▼";font-size:.7em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{white-space:normal;min-width:4.5em}
span.ci{color:var(--muted);font-size:.72rem}
.muted{color:var(--muted)}
td.mono,.mono{font-family:ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:.8rem}
table.info tbody th{width:11em;background:none;color:var(--muted);font-weight:500}
table.info td{word-break:break-word}
table.side td{min-width:16em;max-width:36em}
table.side thead th{text-align:left}
svg.fig{max-width:100%;height:auto;display:block}
img.fig{max-width:100%;height:auto;display:block}
.gal{border-collapse:separate;border-spacing:3px}
.gal td,.gal th{border:none;padding:0;vertical-align:middle}
.gal th.cls{font-weight:500;color:var(--muted);font-size:.78rem;text-align:center;background:none}
.gal td.lab{font-size:.76rem;padding-right:8px;white-space:nowrap;color:var(--fg)}
.gal td.lab b{display:inline-block;min-width:3.4em}
.gal tr.sep td{height:6px}
.thumb{width:72px;height:72px;background-size:100% 100%;image-rendering:pixelated;border:1px solid var(--line)}
figure.tile{margin:0;width:74px}
figure.tile svg{width:72px;height:72px;display:block;border:1px solid var(--line)}
figure.tile image{image-rendering:pixelated}
figure.tile figcaption{font-size:.68rem;text-align:center;color:var(--muted);line-height:1.1}
figure.tile.diff figcaption{color:#b00020;font-weight:600}
path.set{fill:var(--set);fill-opacity:.5;fill-rule:evenodd;stroke:var(--set);stroke-opacity:.8;
stroke-width:.6px;vector-effect:non-scaling-stroke}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent);font-size:.88rem}
pre{white-space:pre-wrap;margin:4px 0;font-size:.75rem}
footer{margin-top:36px;padding:12px 28px;border-top:1px solid var(--line);color:var(--muted);font-size:.8rem}
"""

SCRIPT = """
(function(){
  function val(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''){var n=parseFloat(v);if(!isNaN(n))return n;}
    return td.textContent.trim().toLowerCase();}
  document.querySelectorAll('table.sortable').forEach(function(t){
    var ths=t.tHead?t.tHead.rows[0].cells:[];
    Array.prototype.forEach.call(ths,function(th,i){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        Array.prototype.forEach.call(ths,function(o){o.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);
          if(typeof x!==typeof y){x=String(x);y=String(y);}
          return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""


def esc(s) -> str:
    return html.escape(str(s), quote=True)


@dataclass
class Column:
    key: str
    header: str
    tip: str = ""
    digits: int = 3
    numeric: bool = True
    render: object = None  # callable(row) -> html, overrides the default cell

    def cell(self, row: dict) -> str:
        if self.render is not None:
            inner = self.render(row)
        else:
            inner = esc(fmt(row.get(self.key), self.digits))
        v = row.get(self.key)
        data = f' data-v="{esc(v)}"' if self.numeric and isinstance(v, (int, float)) and v == v else ""
        return f'<td class="{"num" if self.numeric else ""}"{data}>{inner}</td>'


def table(columns: list[Column], rows: list[dict], cls: str = "sortable") -> str:
    head = "".join(
        f'<th class="{"num" if c.numeric else ""}"{f" title={chr(34)}{esc(c.tip)}{chr(34)}" if c.tip else ""}>'
        f"{esc(c.header)}</th>"
        for c in columns
    )
    body = "".join("<tr>" + "".join(c.cell(r) for c in columns) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def info_table(items: list[tuple[str, str]]) -> str:
    """Label → value rows; values are HTML (escape them before)."""
    return (
        '<table class="info"><tbody>'
        + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
        + "</tbody></table>"
    )


def side_table(labels: list[str], names: list[str], cells: list[list[str]]) -> str:
    """Several runs side by side: one row per label, one column per run; cells are HTML."""
    head = "<th></th>" + "".join(f"<th>{esc(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{esc(lab)}</th>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for lab, row in zip(labels, cells)
    )
    return f'<div class="scroll"><table class="info side"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def how(text_html: str) -> str:
    return f'<p class="how">{text_html}</p>'


@dataclass
class Section:
    id: str
    title: str
    body: str
    intro: str = ""

    def render(self) -> str:
        return (
            f'<section id="{esc(self.id)}" data-section="{esc(self.id)}"><h2>{esc(self.title)}</h2>'
            f"{self.intro}{self.body}</section>"
        )


def runs_grid(blocks: list[tuple[str, str]], single: bool) -> str:
    """One block per run; several runs sit side by side where the window is wide enough."""
    if single:
        return blocks[0][1] if blocks else ""
    return (
        '<div class="runs">'
        + "".join(f'<div class="run-block" data-run="{esc(n)}"><h3>{esc(n)}</h3>{b}</div>' for n, b in blocks)
        + "</div>"
    )


@dataclass
class Page:
    title: str
    subtitle: str
    sections: list[Section]
    footer: str = ""
    head_style: list[str] = field(default_factory=list)  # extra CSS (e.g. the gallery's input images, once each)

    def render(self) -> str:
        nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in self.sections)  # spaces: lines may break
        extra = "\n".join(self.head_style)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="generator" content="onnx-fe report">'
            f"<title>{esc(self.title)}</title><style>{CSS}{extra}</style></head><body>"
            f'<header class="top" id="top"><h1>{esc(self.title)}</h1><div class="sub">{self.subtitle}</div></header>'
            f'<nav class="toc" aria-label="sections">{nav}</nav><main>'
            + "".join(s.render() for s in self.sections)
            + f"</main><footer>{self.footer}</footer><script>{SCRIPT}</script></body></html>\n"
        )
