"""API budget: never let a sync push the org's daily API usage past ``api_budget_share``.

The CRMs report usage on every response (Salesforce ``Sforce-Limit-Info: api-usage=used/max``,
HubSpot ``X-HubSpot-RateLimit-Daily`` and ``-Daily-Remaining``). :class:`ApiBudget` keeps the
latest figure and, before each call, refuses the call that would cross ``share × max`` with
:class:`QuotaExhaustedError`: the sync stops cleanly (its cursors are committed) instead of
spending the org's allocation that sales reps and other integrations need.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping

from connectors.errors import QuotaExhaustedError

_SF_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


class ApiBudget:
    """The allowed share of the daily allocation, and the latest usage the CRM reported."""

    def __init__(self, share: float, *, crm: str) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"api budget share must be within (0, 1], got {share}")
        self.share = share
        self.crm = crm
        self.used: int | None = None
        self.limit: int | None = None
        self.calls_since_report = 0
        self._lock = threading.Lock()

    def observe(self, used: int, limit: int) -> None:
        """Record usage as the CRM reported it (this response included)."""
        with self._lock:
            self.used = used
            self.limit = limit
            self.calls_since_report = 0

    def observe_salesforce(self, header: str | None) -> None:
        """Read a ``Sforce-Limit-Info`` header (absent or malformed: ignored)."""
        match = _SF_USAGE.search(header or "")
        if match:
            self.observe(int(match.group(1)), int(match.group(2)))

    def observe_hubspot(self, headers: Mapping[str, str]) -> None:
        """Read HubSpot's daily rate-limit headers (case-insensitive mapping expected)."""
        daily = headers.get("X-HubSpot-RateLimit-Daily")
        remaining = headers.get("X-HubSpot-RateLimit-Daily-Remaining")
        if daily is None or remaining is None:
            return
        try:
            limit, left = int(daily), int(remaining)
        except ValueError:
            return
        self.observe(max(limit - left, 0), limit)

    def allowed(self) -> int | None:
        """The usage ceiling (``floor(share × limit)``), or None before the CRM reported a limit."""
        if self.limit is None:
            return None
        return math.floor(self.share * self.limit)

    def check(self, calls: int = 1) -> None:
        """Raise :class:`QuotaExhaustedError` if ``calls`` more calls would cross the ceiling.

        Calls made since the last report (responses without headers) are counted as used.
        """
        with self._lock:
            ceiling = self.allowed()
            if ceiling is None or self.used is None:
                return
            projected = self.used + self.calls_since_report + calls
            if projected > ceiling:
                raise QuotaExhaustedError(
                    f"{self.crm} API budget reached: {self.used}/{self.limit} calls used today, "
                    f"leadscore may use up to {self.share:.0%} ({ceiling})",
                    code="BUDGET_SHARE",
                )

    def count_call(self) -> None:
        """Note a call whose response carried no usage figure."""
        with self._lock:
            self.calls_since_report += 1
