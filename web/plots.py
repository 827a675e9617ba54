"""Server-side SVG plots for the console (matplotlib's object API: no pyplot state, safe per request).

Each function returns an ``<svg>`` string sized by its viewBox (CSS scales it to the page width,
so it stays readable on a phone) or None when there is nothing to draw; the page then says why.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from scoring.time_axis import fit_time_axis

TIER_COLOURS = {"A": "#2ca02c", "B": "#8fbc8f", "C": "#f0ad4e", "D": "#d9534f"}
_SIZE = re.compile(r'\s(width|height)="[^"]*pt"')


def _figure(width: float = 5.0, height: float = 2.8) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _svg(fig: Figure, title: str) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    # Text stays text (smaller, selectable); sizes come from the viewBox so CSS can scale the plot.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = _SIZE.sub("", svg, count=2)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{title}" class="plot" ', 1)


def score_history(points: Sequence[dict[str, Any]]) -> str | None:
    """A lead's score over the data's time (each score's ``as_of``: the CRM's clock it was scored
    at, not when the machine computed it; ``scored_at`` for scores without one), each point
    coloured by its tier."""
    if not points:
        return None
    fig, ax = _figure(5.0, 2.6)

    def when(p: dict[str, Any]) -> Any:
        return p.get("as_of") or p["scored_at"]

    points = sorted(points, key=when)
    ax.plot([when(p) for p in points], [p["score"] for p in points], color="#888", lw=1, zorder=1)
    for tier, colour in TIER_COLOURS.items():
        sel = [p for p in points if p["tier"] == tier]
        if sel:
            ax.scatter([when(p) for p in sel], [p["score"] for p in sel], color=colour, label=f"tier {tier}",
                       zorder=2, s=24)
    ax.set_xlabel("CRM time scored at", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return _svg(fig, "score history")


def calibration(table: Sequence[dict[str, Any]], live: Sequence[dict[str, Any]] = ()) -> str | None:
    """Predicted vs observed conversion by score band (test set, and live matured leads if any)."""
    if not table and not live:
        return None
    fig, ax = _figure(4.2, 3.4)
    values = [r["predicted"] for r in [*table, *live]] + [r["observed"] for r in [*table, *live]]
    top = max(max(values), 0.05) * 1.1
    ax.plot([0, top], [0, top], ls="--", color="grey", label="perfect")
    if table:
        ax.plot([r["predicted"] for r in table], [r["observed"] for r in table], marker="o", label="test set")
    if live:
        ax.plot([r["predicted"] for r in live], [r["observed"] for r in live], marker="s", label="live")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed conversion")
    ax.legend(fontsize=7)
    return _svg(fig, "calibration")


def lift(test: Sequence[float | None], live: Sequence[float | None] = ()) -> str | None:
    """Lift by score decile (1 = highest), test set beside live matured leads."""
    if not test and not live:
        return None
    fig, ax = _figure(4.8, 2.8)
    width = 0.4
    if test:
        ax.bar([i + 1 - width / 2 for i in range(len(test))], [v or 0 for v in test], width, label="test set")
    if live:
        ax.bar([i + 1 + width / 2 for i in range(len(live))], [v or 0 for v in live], width, label="live")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("score decile (1 = highest)")
    ax.set_ylabel("lift over average")
    ax.legend(fontsize=7)
    return _svg(fig, "lift by decile")


def importance(items: list[tuple[str, float]]) -> str | None:
    """Horizontal bars of feature importances (shares of mean |contribution|), the first on top."""
    items = items[::-1]
    if not items:
        return None
    fig, ax = _figure(5.6, 0.3 * len(items) + 1.0)
    ax.barh([k for k, _ in items], [100 * v for _, v in items], color="#4c72b0")
    ax.set_xlabel("share of mean |contribution| (%)")
    ax.tick_params(axis="y", labelsize=8)
    return _svg(fig, "feature importance")


def time_series(series: Mapping[str, Sequence[tuple[datetime, float]]], *, ylabel: str,
                hlines: Sequence[tuple[float, str]] = (), ylim: tuple[float, float] | None = None,
                colours: dict[str, str] | None = None) -> str | None:
    """One line per named series of (time, value) points. The time axis spans the points (at least
    a week around them: one monitor run drew an axis of four years around its day)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = _figure(5.0, 2.6)
    fit_time_axis(ax, [t for points in series.values() for t, _ in points])
    for name, points in series.items():
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", ms=3, label=name,
                color=(colours or {}).get(name))
    for y, label in hlines:
        ax.axhline(y, ls="--", lw=1, color="grey")
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    return _svg(fig, ylabel)
