"""The DSMB report as one self-contained HTML file (no script, font or network), and the same HTML as a
PDF through WeasyPrint: a title page (study, data cut, knowledge time, fingerprint, session), a table of
contents with page numbers, a running header with the session on every page, and page numbers."""

from __future__ import annotations

import html
from pathlib import Path

from projections.dsmb.content import Report, Section

e = html.escape

STYLE = """
body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:2em;color:#222;font-size:13px}
table{border-collapse:collapse;margin:0.6em 0}
td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top;font-size:12px} th{background:#f0f0f0}
.banner{font-weight:bold;letter-spacing:0.02em;padding:4px 8px;background:#fde8e8;border:1px solid #d99}
.banner.open{background:#e8f0fd;border-color:#99b}
.meta td{border:none;padding:2px 8px}
.footer{font-size:11px;color:#555;border-top:1px solid #ccc;margin-top:0.6em;padding-top:0.3em}
.notes{font-size:11px;color:#444;margin:0.3em 0 0 1.2em;padding:0}
.toc a{text-decoration:none;color:#222}
.figure svg{max-width:100%;height:auto}
section{margin-top:1.6em}
@page{size:A4;margin:2.2cm 1.6cm 2cm 1.6cm;
  @top-center{content:string(banner);font-size:10px;color:#a33}
  @top-right{content:string(doctitle);font-size:9px;color:#666}
  @bottom-left{content:"fingerprint " string(fingerprint);font-size:9px;color:#666}
  @bottom-right{content:"page " counter(page) " of " counter(pages);font-size:9px}}
@media print{
  body{margin:0}
  .title-page{page-break-after:always}
  .toc-page{page-break-after:always}
  section{page-break-before:auto}
  h1.doc{string-set:doctitle content()}
  .banner{string-set:banner content()}
  .fp{string-set:fingerprint content()}
  .toc a::after{content:leader(".") target-counter(attr(href), page)}
  table{page-break-inside:auto} tr{page-break-inside:avoid}
}
"""


def footer(report: Report, section: Section) -> str:
    """What every table and figure carries: session, data cut, knowledge time, rules and fingerprint."""
    notes = "".join(f"<li>{e(n)}</li>" for n in section.notes)
    return (f'<ol class="notes">{notes}</ol>' if notes else "") + (
        f'<p class="footer">{e(report.banner)} · Data cut: {e(report.data_cut)} · Knowledge time: '
        f"{e(report.knowledge_time)} · Rules: {e(report.rules)} · Fingerprint: <code>{e(section.fingerprint)}</code>"
        "</p>")


def render_html(report: Report) -> str:
    session = "open" if report.session == "open" else "closed"
    meta = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in report.meta)
    toc = "".join(f'<li><a href="#{s.key}">{e(s.title)}</a></li>' for s in report.sections)
    body = "".join(f'<section id="{s.key}"><h2>{e(s.title)}</h2>{s.body}{footer(report, s)}</section>'
                   for s in report.sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(report.title)}</title><style>{STYLE}</style></head>
<body>
<div class="title-page">
<p class="banner {session}">{e(report.banner)}</p>
<h1 class="doc">{e(report.title)}</h1>
<p class="fp">{e(report.fingerprint)}</p>
<table class="meta">{meta}</table>
</div>
<div class="toc-page"><h2>Contents</h2><ol class="toc">{toc}</ol></div>
{body}
</body></html>
"""


def write_pdf(html_text: str, path: Path) -> None:
    """The same HTML, paginated (WeasyPrint): every page has the session, the title and its number."""
    from weasyprint import HTML

    HTML(string=html_text).write_pdf(path, presentational_hints=True)
