"""The time axis of the health charts (the HTML report's and the console's), fitted to the points."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

MIN_SPAN_DAYS = 7  # the narrowest time axis a chart draws


def fit_time_axis(ax: Any, times: Sequence[datetime], *, min_days: float = MIN_SPAN_DAYS) -> None:
    """Span the points, at least ``min_days`` around them (matplotlib drew one monitor run on an
    axis of four years around its day), with concise date labels."""
    from matplotlib import dates as mdates

    if times:
        first, last = min(times), max(times)
        if last - first < timedelta(days=min_days):
            middle = first + (last - first) / 2
            ax.set_xlim(middle - timedelta(days=min_days / 2), middle + timedelta(days=min_days / 2))
    locator = mdates.AutoDateLocator(maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
