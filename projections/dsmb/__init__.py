"""The DSMB's report (issue 27): what it holds (``content``), its tables and figures, and the HTML and PDF
documents (``document``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from projections.dsmb.content import Report, ReportOptions, ReportSources, build_report
from projections.dsmb.document import render_html, write_pdf


def write_report(src: ReportSources, options: ReportOptions, out: Path, mask_key: Path | None,
                 now: datetime) -> Report:
    """Build the report and write it to ``out`` (PDF when it ends in .pdf, else HTML); a masked report's key
    goes to ``mask_key`` and nowhere else. ValueError when the options cannot go together."""
    if options.mask_arms and mask_key is None:
        raise ValueError("--mask-arms needs --mask-key FILE: the key that maps each group to its arm is written "
                         "there, never into the report")
    if mask_key is not None and mask_key.resolve() == out.resolve():
        raise ValueError("--mask-key must be another file than --out")
    report = build_report(src, options, now)
    text = render_html(report)
    if out.suffix.lower() == ".pdf":
        write_pdf(text, out)
    else:
        out.write_text(text, encoding="utf-8")
    if report.mask_key is not None and mask_key is not None:
        mask_key.write_text(json.dumps({"report_fingerprint": report.fingerprint, "groups": report.mask_key},
                                       indent=2) + "\n", encoding="utf-8")
    return report


__all__ = ["Report", "ReportOptions", "ReportSources", "build_report", "render_html", "write_pdf", "write_report"]
