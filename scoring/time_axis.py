"""The time axis of the health charts (the HTML report's and the console's), fitted to the points."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

MIN_SPAN_DAYS = 7  # the narrowest time axis a chart draws


def fit_time_axis(ax: Any, times: Sequence[datetime], *, min_days: float = MIN_SPAN_DAYS) -> None:
    """Span the points, at least ``min_days`` around them (matplotlib drew one monitor run on an
    axis of four years around its day), each tick a whole date (a month label over day numbers
    read June's days as July's)."""
    from matplotlib import dates as mdates

    span = timedelta(0)
    if times:
        first, last = min(times), max(times)
        span = last - first
        if span < timedelta(days=min_days):
            middle = first + span / 2
            ax.set_xlim(middle - timedelta(days=min_days / 2), middle + timedelta(days=min_days / 2))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m" if span > timedelta(days=730) else "%Y-%m-%d"))
