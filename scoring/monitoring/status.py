"""Statuses of a monitor run: levels, one alert, the findings a run collects, JSON-safe values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from store.models import MonitorStatus

OK, WARN, ALERT = MonitorStatus.ok, MonitorStatus.warn, MonitorStatus.alert
NOT_ENOUGH = "not enough data"
SEVERITY: dict[str, int] = {OK: 0, WARN: 1, ALERT: 2}


@dataclass
class Alert:
    level: str  # warn | alert
    kind: str
    message: str
    value: float | None = None
    threshold: float | None = None
    action: str = ""  # what to do about it, in words

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "kind": self.kind, "message": self.message,
                "value": finite(self.value), "threshold": finite(self.threshold), "action": self.action}


def finite(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, int | np.integer):
        return int(value)
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return finite(value)


@dataclass
class Findings:
    metrics: dict[str, Any] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)



def worst(alerts: Sequence[Alert]) -> str:
    return max((a.level for a in alerts), key=lambda lvl: SEVERITY[lvl], default=OK)
