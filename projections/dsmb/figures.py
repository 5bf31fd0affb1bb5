"""The DSMB report's figures as inline SVG: incidence before and after the anchor, eDISH, Kaplan-Meier.
Drawn with matplotlib (text kept as text, so a PDF reader can search it); no file, no network."""

from __future__ import annotations

import io
import re
from typing import Any

from safety.incidence import CATEGORIES


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    # no metadata block (its RDF names web addresses) and no namespaces: inline SVG in HTML needs neither,
    # so the report holds no address of anything
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buffer.getvalue()
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text[text.index("<svg"):])
    return '<div class="figure">' + svg.replace("xlink:href", "href") + "</div>"


def _figure(width: float = 7.0, height: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def incidence_svg(answer: dict[str, Any]) -> str:
    """Incidence per person-month with 95% intervals, before and after, per category."""
    fig, ax = _figure()
    for i, c in enumerate(CATEGORIES):
        for j, (side, colour) in enumerate((("pre", "#8da0cb"), ("post", "#fc8d62"))):
            v = answer["categories"][c][side]
            rate = v["incidence_per_person_month"] or 0.0
            x = i * 3 + j
            ax.bar(x, rate, color=colour, label=side if i == 0 else None)
            if v["ci95_high"] is not None:
                ax.vlines(x, v["ci95_low"] or 0.0, v["ci95_high"], color="#222")
    ax.set_xticks([i * 3 + 0.5 for i in range(len(CATEGORIES))], list(CATEGORIES))
    ax.set_ylabel("events per person-month (95% CI)")
    ax.legend()
    return _svg(fig)


def edish_svg(liver: dict[str, Any]) -> str:
    """Peak ALT or AST against peak total bilirubin (×ULN, log scales) by group, with the Hy's law lines."""
    fig, ax = _figure(6.0, 4.5)
    groups: dict[str, list[tuple[float, float]]] = {}
    for p in liver["patients"]:
        t = max((x for x in (p["peak_alt_xuln"], p["peak_ast_xuln"]) if x is not None), default=None)
        if t is not None and p["peak_bili_xuln"] is not None:
            groups.setdefault(p["group"], []).append((t, p["peak_bili_xuln"]))
    for group, points in sorted(groups.items()):
        ax.scatter([x for x, _ in points], [y for _, y in points], s=14, label=group, alpha=0.75)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(liver["thresholds"]["transaminase_xuln"], color="red", linestyle="--", linewidth=0.8)
    ax.axhline(liver["thresholds"]["bilirubin_xuln"], color="red", linestyle="--", linewidth=0.8)
    ax.set_xlabel("peak ALT or AST (×ULN)")
    ax.set_ylabel("peak total bilirubin (×ULN)")
    if groups:
        ax.legend(fontsize=8)
    return _svg(fig)


def km_svg(curves: dict[str, dict[str, Any]], what: str) -> str:
    """Kaplan-Meier curves of the share still free of ``what`` by group, with 95% bands."""
    fig, ax = _figure()
    for group, c in curves.items():
        days = [s["day"] for s in c["steps"]]
        ax.step(days, [s["survival"] for s in c["steps"]], where="post", label=f"{group} (N = {c['N']})")
        ax.fill_between(days, [s["low"] for s in c["steps"]], [s["high"] for s in c["steps"]], step="post",
                        alpha=0.15)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("days from the first dose")
    ax.set_ylabel(f"free of {what}")
    ax.legend(fontsize=8)
    return _svg(fig)
