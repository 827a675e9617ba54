"""Daily model health: drift, live performance, calibration, data freshness, alerts.

:func:`run_monitor` writes one ``monitor_report`` row per run. What it measures:

* **Drift (population stability).** Cohorts, not raw score rows, are compared so that the mix of
  lead ages in a day's rescoring cannot fake a drift: a *cohort* is every lead created in a
  window, seen at the same age (:data:`COHORT_AGE_DAYS` after creation: early, so that a change
  shows within days; reference and live cohorts are seen at that age alike) and scored by the
  champion. The *reference* cohort is the champion's own test period
  (the last part of its time-ordered training split, out of sample); the *live* cohort is the
  leads created in the :data:`LIVE_WINDOW_DAYS` that ended ``COHORT_AGE_DAYS`` ago (widened by
  as much again, up to :data:`MAX_LIVE_WINDOW_DAYS`, until it holds :data:`MIN_PSI_ROWS` leads).
  The PSI of the
  score, of the champion's most important features (mean absolute contribution on the reference)
  and of the lead-mix features (:data:`MIX_FEATURES`: who the leads are) is computed on the
  reference's decile bins. Above ``psi_warn``: warn; above ``psi_alert``: alert -- for a feature
  only when the score distribution moved too (above ``psi_warn``) or when
  :data:`BROAD_SHIFT_FEATURES` watched features are above ``psi_alert`` at once (a new lead mix);
  a single feature drift the scores do not feel is a warning (:func:`drift_alerts`).
* **The reference is stored with the model** (``model_version.params["monitor_reference"]``: bins,
  shares, importance, baseline AUC). The retrainer stores it when it trains; for a model trained
  elsewhere it is computed from the training window's leads on the first run and stored then.
* **Live performance**, on leads whose horizon has elapsed since they were scored: the score each
  lead had at ``COHORT_AGE_DAYS`` (LeadScore history, whichever model made it) against
  "converted within the horizon after that score". AUC, conversion by tier, ECE, observed vs
  predicted by score band. The AUC is compared with the baseline AUC of the model that made most
  of those scores on its reference cohort; a drop above ``auc_drop_alert`` alerts when it is
  also beyond sampling noise (one-sided 99 %, Hanley-McNeil standard errors of both), else warns.
* **Feature importance change** between the champion and the version it replaced.
* **Freshness**: the last succeeded ``sync_run`` per connection against ``freshness_hours``;
  failed outbox writes.

Alerts go to the log (WARNING), to ``monitor_report.alerts``/``status`` and, when configured, to
a webhook (JSON POST; failures are logged, never raised).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from scoring import registry
from scoring.features import (
    align_to_spec,
    build_feature_frame,
    load_activities_frame,
    load_company_peers,
    load_leads_frame,
)
from scoring.frame import MISSING_TOKEN, prepare_frame
from scoring.metrics import conversion_by_tier, expected_calibration_error
from scoring.training import BIAS, TrainedModel
from store.models import (
    Activity,
    Connection,
    Lead,
    LeadScore,
    ModelVersion,
    MonitorReport,
    Outbox,
    ShadowScore,
    SyncRun,
)

log = logging.getLogger(__name__)

REFERENCE_KEY = "monitor_reference"
REFERENCE_FORMAT = 3  # 2: the lead-mix features are watched too; 3: reference outcomes (tier norms)
COHORT_AGE_DAYS = 7
LIVE_WINDOW_DAYS = 7
MAX_LIVE_WINDOW_DAYS = 28
PERFORMANCE_WINDOW_DAYS = 30
DEFAULT_HORIZON_DAYS = 90
TOP_FEATURES = 8
# Who the leads are, known at creation: watched besides the top features, because a new lead mix
# is a market change whatever the champion makes of it (campaigns are left out: they come and go).
MIX_FEATURES: tuple[str, ...] = ("industry", "employee_band", "revenue_band", "country", "seniority",
                                 "department", "lead_source")
PSI_BINS = 10
MAX_CATEGORIES = 20
OTHER = "__other__"
MISSING_BIN = "__missing__"
# Shares are floored before the log so an empty bin gives a large but finite PSI term.
SHARE_FLOOR = 1e-4
MIN_PSI_ROWS = 100
BROAD_SHIFT_FEATURES = 3  # top features above psi_alert at once that alert without the score moving
MIN_PERFORMANCE_POSITIVES = 20
MAX_IMPORTANCE_ROWS = 1000
SCORE_BANDS: tuple[float, ...] = (0.0, 0.05, 0.10, 0.20, 0.40, 1.0001)
WEBHOOK_TIMEOUT_SECONDS = 5.0
# z for a one-sided 99 % test: an AUC drop is an alert only when noise is an unlikely cause. The
# monitor runs daily on overlapping cohorts, so a 95 % test would cry wolf every few weeks.
Z_ONE_SIDED = 2.326

# Leads with a known outcome in the top tier needed before its conversion is judged.
MIN_TOP_TIER_LEADS = 20
# Reference outcomes kept with the model (probability, converted) to derive tier norms for any policy.
MAX_REFERENCE_OUTCOMES = 4000

OK, WARN, ALERT = "ok", "warn", "alert"
NOT_ENOUGH = "not enough data"
_SEVERITY = {OK: 0, WARN: 1, ALERT: 2}


# ------------------------------------------------------------------------------ distributions


@dataclass(frozen=True)
class Distribution:
    """Bins of one variable and each bin's share in the reference.

    Numeric: ``edges`` are interior cut points; bin i holds (edges[i-1], edges[i]], the last
    bin everything above, plus a final missing bin. Categorical: ``categories`` (the most frequent
    reference values), then ``__other__`` and ``__missing__``.
    """

    kind: str  # "numeric" | "categorical"
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shares": list(self.shares), "edges": list(self.edges),
                "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Distribution:
        return cls(kind=str(d["kind"]), shares=tuple(float(s) for s in d["shares"]),
                   edges=tuple(float(e) for e in d.get("edges", ())),
                   categories=tuple(str(c) for c in d.get("categories", ())))

    def counts(self, values: Any) -> np.ndarray:
        """Counts of ``values`` in this distribution's bins."""
        if self.kind == "numeric":
            x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
            finite = ~np.isnan(x)
            idx = np.searchsorted(np.asarray(self.edges, dtype="float64"), x[finite], side="left")
            counts = np.bincount(idx, minlength=len(self.edges) + 1).astype("float64")
            return np.append(counts, float((~finite).sum()))
        text = pd.Series(values, dtype=object).map(lambda v: MISSING_BIN if v is None or v == MISSING_TOKEN
                                                   or (isinstance(v, float) and math.isnan(v)) else str(v))
        index = {c: i for i, c in enumerate(self.categories)}
        n = len(self.categories)
        codes = text.map(lambda v: n + 1 if v == MISSING_BIN else index.get(v, n)).to_numpy(dtype="int64")
        return np.bincount(codes, minlength=n + 2).astype("float64")


def numeric_distribution(values: Any, bins: int = PSI_BINS) -> Distribution:
    """Decile bins (fewer when values repeat, e.g. mostly-zero counts) of a numeric reference."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    finite = x[~np.isnan(x)]
    edges: tuple[float, ...] = ()
    if finite.size:
        qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = tuple(float(e) for e in np.unique(qs))
    dist = Distribution(kind="numeric", shares=(), edges=edges)
    counts = dist.counts(x)
    return Distribution(kind="numeric", shares=tuple((counts / max(1.0, counts.sum())).tolist()), edges=edges)


def categorical_distribution(values: Any, max_categories: int = MAX_CATEGORIES) -> Distribution:
    """The reference's most frequent categories, then "other" and "missing"."""
    text = pd.Series(values, dtype=object)
    present = text[text.notna() & (text != MISSING_TOKEN)].astype(str)
    categories = tuple(str(c) for c in present.value_counts().index[:max_categories])
    dist = Distribution(kind="categorical", shares=(), categories=categories)
    counts = dist.counts(text)
    return Distribution(kind="categorical", shares=tuple((counts / max(1.0, counts.sum())).tolist()),
                        categories=categories)


def psi(expected_shares: Sequence[float] | np.ndarray, actual_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index Σ (a − e) · ln(a / e) of live counts against reference shares."""
    e = np.maximum(np.asarray(expected_shares, dtype="float64"), SHARE_FLOOR)
    counts = np.asarray(actual_counts, dtype="float64")
    if counts.sum() <= 0:
        return float("nan")
    a = np.maximum(counts / counts.sum(), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC."""
    if positives < 1 or negatives < 1 or not math.isfinite(auc):
        return float("nan")
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    return float(math.sqrt(max(var, 0.0)))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


# ------------------------------------------------------------------------------------ cohorts


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """A stored timestamp (ISO string, datetime or None) as an aware UTC datetime, or None."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def trained_at(mv: ModelVersion) -> datetime:
    """The (CRM-clock) time a version was trained as of: ``params["as_of"]``, else its window end
    plus the horizon, else the row's creation time."""
    params = mv.params or {}
    when = parse_time(params.get("as_of"))
    if when is not None:
        return when
    if mv.train_end is not None:
        return _as_utc(mv.train_end) + timedelta(days=horizon_of(mv))
    return _as_utc(mv.created_at)


def horizon_of(mv: ModelVersion | None) -> int:
    """The label horizon (days) a version was trained with (90 when not recorded)."""
    if mv is None:
        return DEFAULT_HORIZON_DAYS
    value = (mv.params or {}).get("horizon_days")
    return int(value) if isinstance(value, int | float) and value > 0 else DEFAULT_HORIZON_DAYS


@dataclass
class Cohort:
    """Leads created in a window, seen ``age_days`` after creation: features and lead columns."""

    leads: pd.DataFrame
    features: pd.DataFrame
    snapshots: pd.Series

    def __len__(self) -> int:
        return len(self.leads)


def cohort_leads(session: Session, start: datetime, end: datetime) -> list[int]:
    """Ids of live leads created in [start, end)."""
    stmt = (
        select(Lead.id)
        .where(Lead.crm_created_at >= start, Lead.crm_created_at < end, Lead.is_deleted.is_(False))
        .order_by(Lead.id)
    )
    return list(session.scalars(stmt))


def build_cohort(session: Session, lead_ids: Sequence[int], *, age_days: int = COHORT_AGE_DAYS) -> Cohort:
    """Point-in-time features of leads at ``created + age_days`` (activity strictly before)."""
    leads = load_leads_frame(session, lead_ids)
    if leads.empty:
        empty = pd.DataFrame()
        return Cohort(leads=leads, features=empty, snapshots=pd.Series(dtype="datetime64[ns, UTC]"))
    snapshots = pd.to_datetime(leads["crm_created_at"], utc=True) + pd.Timedelta(days=age_days)
    latest = snapshots.max().to_pydatetime()
    activities = load_activities_frame(session, list(leads["id"]), before=latest)
    peers = load_company_peers(session, [k for k in leads["company_key"].dropna().unique().tolist()])
    features = build_feature_frame(leads, activities, snapshots, company_peers=peers)
    return Cohort(leads=leads, features=features, snapshots=snapshots)


def _labels_at(leads: pd.DataFrame, snapshots: pd.Series, horizon_days: int, as_of: datetime
               ) -> tuple[np.ndarray, np.ndarray]:
    """(known mask, label): converted within the horizon after the snapshot; unknown if the
    horizon has not elapsed by ``as_of`` or the lead had converted before the snapshot."""
    conv = pd.to_datetime(leads["converted_at"], utc=True)
    snaps = pd.to_datetime(snapshots, utc=True)
    horizon = pd.Timedelta(days=horizon_days)
    elapsed = (snaps + horizon) <= pd.Timestamp(as_of)
    before = conv.notna() & (conv <= snaps)
    label = conv.notna() & (conv > snaps) & (conv <= snaps + horizon)
    return (elapsed & ~before).to_numpy(dtype=bool), label.to_numpy(dtype="int64")


# ---------------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """A model's reference cohort summary (what is stored in ``params["monitor_reference"]``)."""

    cohort_start: datetime
    cohort_end: datetime
    rows: int
    score: Distribution
    features: dict[str, Distribution]
    importance: dict[str, float]
    baseline_auc: float | None
    baseline_rows: int
    baseline_positives: int
    computed_at: datetime
    age_days: int = COHORT_AGE_DAYS
    # (probability, converted) of the reference leads whose outcome was known: the tier norms of
    # whatever tier policy is active are derived from these.
    outcomes: list[tuple[float, int]] = field(default_factory=list)

    def tier_norms(self, policy: Any) -> dict[str, dict[str, float | int]]:
        """Conversion by tier of the reference leads under ``policy`` (capacity shares are cut on
        the reference itself): the norm live tiers are compared with."""
        if not self.outcomes:
            return {}
        from scoring.tiers import tiers_for

        p = np.asarray([o[0] for o in self.outcomes], dtype="float64")
        y = np.asarray([o[1] for o in self.outcomes], dtype="int64")
        return conversion_by_tier(y, tiers_for(policy, p))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT, "cohort_start": self.cohort_start.isoformat(),
            "cohort_end": self.cohort_end.isoformat(), "rows": self.rows, "age_days": self.age_days,
            "score": self.score.to_dict(), "features": {k: v.to_dict() for k, v in self.features.items()},
            "importance": self.importance, "baseline_auc": self.baseline_auc,
            "baseline_rows": self.baseline_rows, "baseline_positives": self.baseline_positives,
            "computed_at": self.computed_at.isoformat(),
            "outcomes": [[round(float(p), 6), int(y)] for p, y in self.outcomes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        def when(key: str) -> datetime:
            value = parse_time(d.get(key))
            return value if value is not None else datetime(1970, 1, 1, tzinfo=UTC)

        auc = d.get("baseline_auc")
        return cls(
            cohort_start=when("cohort_start"), cohort_end=when("cohort_end"), rows=int(d.get("rows", 0)),
            score=Distribution.from_dict(d["score"]),
            features={k: Distribution.from_dict(v) for k, v in d.get("features", {}).items()},
            importance={str(k): float(v) for k, v in d.get("importance", {}).items()},
            baseline_auc=float(auc) if isinstance(auc, int | float) else None,
            baseline_rows=int(d.get("baseline_rows", 0)), baseline_positives=int(d.get("baseline_positives", 0)),
            computed_at=when("computed_at"), age_days=int(d.get("age_days", COHORT_AGE_DAYS)),
            outcomes=[(float(p), int(y)) for p, y in d.get("outcomes", [])],
        )


def reference_window(mv: ModelVersion) -> tuple[datetime, datetime] | None:
    """Creation-time window of a version's reference cohort: its test period if recorded, else the
    last 20 % of its training window. None when the version records no window at all."""
    params = mv.params or {}
    split = params.get("split") or {}
    offsets = params.get("snapshot_offsets_days") or [1]
    first_offset = timedelta(days=float(min(offsets)))
    start = parse_time(split.get("test_from")) if split.get("kind") == "time" else None
    end = parse_time(split.get("test_to")) if split.get("kind") == "time" else None
    if start is not None and end is not None and end > start:
        # split_at is a lead's first snapshot (creation + the smallest offset).
        return start - first_offset, end - first_offset + timedelta(seconds=1)
    if mv.train_start is None or mv.train_end is None:
        return None
    lo, hi = _as_utc(mv.train_start), _as_utc(mv.train_end)
    return lo + (hi - lo) * 0.8 - first_offset, hi - first_offset + timedelta(seconds=1)


def feature_importance(model: TrainedModel, features: pd.DataFrame) -> dict[str, float]:
    """Each feature's share of the mean absolute contribution (sums to 1) on ``features``."""
    if features.empty:
        return {}
    sample = features.iloc[:MAX_IMPORTANCE_ROWS]
    contrib = model.contributions(align_to_spec(sample, model.spec)).drop(columns=[BIAS])
    mean_abs = contrib.abs().mean(axis=0)
    total = float(mean_abs.sum())
    if total <= 0:
        return {str(k): 0.0 for k in mean_abs.index}
    return {str(k): float(v) / total for k, v in mean_abs.sort_values(ascending=False).items()}


def compute_reference(session: Session, mv: ModelVersion, *, as_of: datetime) -> Reference | None:
    """Build a version's reference from its reference cohort (None if it has no usable window)."""
    window = reference_window(mv)
    if window is None:
        return None
    start, end = window
    ids = cohort_leads(session, start, end)
    if not ids:
        return None
    cohort = build_cohort(session, ids)
    model = registry.load_model(mv)
    aligned = align_to_spec(cohort.features, model.spec)
    proba = model.predict_proba(aligned)
    importance = feature_importance(model, cohort.features)
    encoded = prepare_frame(aligned, model.spec)
    top = [f for f in importance if f in model.spec.columns][:TOP_FEATURES]
    top += [f for f in MIX_FEATURES if f in model.spec.columns and f not in top]
    features = {
        f: numeric_distribution(encoded[f]) if f in model.spec.numeric else categorical_distribution(encoded[f])
        for f in top
    }
    known, label = _labels_at(cohort.leads, cohort.snapshots, horizon_of(mv), as_of)
    auc = _auc(label[known], proba[known]) if known.any() else float("nan")
    rows = np.flatnonzero(known)
    if len(rows) > MAX_REFERENCE_OUTCOMES:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_REFERENCE_OUTCOMES, replace=False))
    outcomes = [(float(proba[i]), int(label[i])) for i in rows]
    return Reference(
        cohort_start=start, cohort_end=end, rows=len(cohort), score=numeric_distribution(proba),
        features=features, importance=importance, baseline_auc=auc if math.isfinite(auc) else None,
        baseline_rows=int(known.sum()), baseline_positives=int(label[known].sum()), computed_at=as_of,
        outcomes=outcomes,
    )


def ensure_reference(session: Session, mv: ModelVersion, *, as_of: datetime | None = None) -> Reference | None:
    """The version's stored reference, computing and storing it (in ``params``) when absent."""
    stored = (mv.params or {}).get(REFERENCE_KEY)
    if isinstance(stored, dict) and stored.get("format") == REFERENCE_FORMAT:
        return Reference.from_dict(stored)
    ref = compute_reference(session, mv, as_of=as_of or trained_at(mv))
    if ref is None:
        return None
    # Reassign (not mutate) so SQLAlchemy sees the JSON column change.
    mv.params = {**(mv.params or {}), REFERENCE_KEY: ref.to_dict()}
    session.flush()
    return ref


# ------------------------------------------------------------------------------------ the run


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
                "value": _finite(self.value), "threshold": _finite(self.threshold), "action": self.action}


def _finite(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, int | np.integer):
        return int(value)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return _finite(value)


@dataclass
class _Findings:
    metrics: dict[str, Any] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _drift(session: Session, champion: ModelVersion, ref: Reference, as_of: datetime, config: MonitoringConfig,
           out: _Findings) -> None:
    end = as_of - timedelta(days=ref.age_days)
    # The shortest window that holds enough leads: a busy CRM shows a change within days, a quiet
    # one is still measured (on up to MAX_LIVE_WINDOW_DAYS).
    days = LIVE_WINDOW_DAYS
    start = end - timedelta(days=days)
    ids = cohort_leads(session, start, end)
    while len(ids) < MIN_PSI_ROWS and days < MAX_LIVE_WINDOW_DAYS:
        days = min(days + LIVE_WINDOW_DAYS, MAX_LIVE_WINDOW_DAYS)
        start = end - timedelta(days=days)
        ids = cohort_leads(session, start, end)
    drift: dict[str, Any] = {"status": NOT_ENOUGH, "leads": len(ids), "needed": MIN_PSI_ROWS,
                             "cohort_start": start, "cohort_end": end, "rows": len(ids),
                             "reference_rows": ref.rows}
    out.metrics["drift"] = drift
    if len(ids) < MIN_PSI_ROWS:
        drift["reason"] = (f"{len(ids)} leads created {start:%Y-%m-%d}..{end:%Y-%m-%d} (seen at {ref.age_days} "
                           f"days old); at least {MIN_PSI_ROWS} needed")
        out.notes.append(f"drift not measured: {drift['reason']}")
        return
    cohort = build_cohort(session, ids, age_days=ref.age_days)
    model = registry.load_model(champion)
    aligned = align_to_spec(cohort.features, model.spec)
    proba = model.predict_proba(aligned)
    encoded = prepare_frame(aligned, model.spec)
    drift["score_psi"] = psi(ref.score.shares, ref.score.counts(proba))
    drift["score_mean"] = float(np.mean(proba))
    feature_psi = {name: psi(dist.shares, dist.counts(encoded[name])) for name, dist in ref.features.items()
                   if name in encoded.columns}
    drift["feature_psi"] = feature_psi
    drift["features_above_alert"] = _above_alert(feature_psi, config)
    found = drift_alerts(drift["score_psi"], feature_psi, config)
    drift["status"] = _worst(found)
    out.alerts.extend(found)


def _worst(alerts: Sequence[Alert]) -> str:
    return max((a.level for a in alerts), key=lambda lvl: _SEVERITY[lvl], default=OK)


DRIFT_ACTION = ("the leads arriving now differ from those the model learnt from: check for a new source, "
                "campaign or market (or a broken field mapping); `leadscore retrain` learns from the new leads "
                "once their outcomes are known")


def _above_alert(feature_psi: dict[str, float], config: MonitoringConfig) -> int:
    return sum(1 for v in feature_psi.values() if math.isfinite(v) and v > config.psi_alert)


def drift_alerts(score_psi: float, feature_psi: dict[str, float], config: MonitoringConfig) -> list[Alert]:
    """The alerts and warnings that PSI values of the score and of the watched features call for.

    Inputs that moved while the scores did not change no decision (cumulative features such as the
    buying-committee size grow with the CRM's age): such a feature drift is a warning only, unless
    :data:`BROAD_SHIFT_FEATURES` of the watched features moved at once (a new lead mix: the market
    changed, whatever the stale model makes of it).
    """
    scores_moved = math.isfinite(score_psi) and score_psi > config.psi_warn
    scores_moved = scores_moved or _above_alert(feature_psi, config) >= BROAD_SHIFT_FEATURES
    alerts: list[Alert] = []
    checks = [("score", score_psi)] + sorted(feature_psi.items(), key=lambda kv: -kv[1])
    for name, value in checks:
        if not math.isfinite(value):
            continue
        what = "score distribution" if name == "score" else f"feature {name}"
        kind = "psi_score" if name == "score" else "psi_feature"
        if value > config.psi_alert and (name == "score" or scores_moved):
            alerts.append(Alert(ALERT, kind, f"{what} drifted: PSI {value:.3f} > {config.psi_alert:g}",
                                value, config.psi_alert, action=DRIFT_ACTION))
        elif value > config.psi_alert:
            alerts.append(Alert(WARN, kind, f"{what} drifted (PSI {value:.3f} > {config.psi_alert:g}) but the "
                                f"score distribution is stable (PSI {score_psi:.3f})", value, config.psi_alert))
        elif value > config.psi_warn:
            alerts.append(Alert(WARN, kind, f"{what} shifting: PSI {value:.3f} > {config.psi_warn:g}",
                                value, config.psi_warn))
    return alerts


def _scores_at_age(session: Session, lead_ids: Sequence[int], age_days: int) -> pd.DataFrame:
    """For each lead, its latest LeadScore written no later than ``created + age_days``."""
    rows: list[Any] = []
    for i in range(0, len(lead_ids), 1000):
        chunk = list(lead_ids[i : i + 1000])
        stmt = (
            select(LeadScore.lead_id, LeadScore.probability, LeadScore.tier, LeadScore.scored_at,
                   LeadScore.model_version_id, Lead.crm_created_at)
            .join(Lead, Lead.id == LeadScore.lead_id)
            .where(LeadScore.lead_id.in_(chunk))
        )
        rows.extend(session.execute(stmt).all())
    df = pd.DataFrame([tuple(r) for r in rows],
                      columns=["lead_id", "probability", "tier", "scored_at", "model_version_id", "created_at"])
    if df.empty:
        return df
    df["scored_at"] = pd.to_datetime(df["scored_at"], utc=True)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    # A score stamped before the lead existed cannot have been served to it (a store loaded
    # out of order): only scores written during the lead's first ``age_days`` count.
    df = df[(df["scored_at"] >= df["created_at"]) & (df["scored_at"] <= df["created_at"] + pd.Timedelta(days=age_days))]
    df = df.sort_values(["lead_id", "scored_at"]).groupby("lead_id", as_index=False).tail(1)
    return df.reset_index(drop=True)


def active_tier_policy(session: Session) -> Any:
    """The active tier policy (the configured default when none was created yet)."""
    from config.app_config import TierConfig
    from scoring.tiers import Policy, find_active_policy

    found = find_active_policy(session)
    if found is not None:
        return found
    default = TierConfig()
    return Policy(mode=default.mode, thresholds=dict(default.thresholds))


def elapsed_scores(session: Session, champion: ModelVersion, lead_ids: Sequence[int], policy: Any,
                   counts: dict[str, Any]) -> pd.DataFrame:
    """The score and tier each lead had at :data:`COHORT_AGE_DAYS` days old.

    Served scores (``lead_score`` history, whichever model wrote them) are used where recorded.
    A lead scored only later (history imported at installation, as in the demo) gets the
    champion's point-in-time score at that age instead -- but only when the champion never
    learnt from it (created in its test period or later); others are left out and counted.
    ``counts`` receives ``served``, ``reconstructed`` and ``excluded_in_training``.
    """
    served = _scores_at_age(session, lead_ids, COHORT_AGE_DAYS)
    columns = ["lead_id", "probability", "tier", "scored_at", "model_version_id"]
    served = served[columns] if not served.empty else pd.DataFrame(columns=columns)
    served = served.assign(source="served")
    missing = sorted(set(lead_ids) - set(served["lead_id"].astype("int64").tolist()))
    window = reference_window(champion)
    counts["served"] = len(served)
    counts["reconstructed"] = 0
    counts["excluded_in_training"] = 0
    if not missing:
        return served.reset_index(drop=True)
    if window is None:
        counts["excluded_in_training"] = len(missing)
        return served.reset_index(drop=True)
    created: dict[int, datetime] = {}
    for i in range(0, len(missing), 1000):
        created.update(session.execute(
            select(Lead.id, Lead.crm_created_at).where(Lead.id.in_(missing[i : i + 1000]))).tuples().all())
    unseen = [i for i in missing if i in created and _as_utc(created[i]) >= window[0]]
    counts["excluded_in_training"] = len(missing) - len(unseen)
    if not unseen:
        return served.reset_index(drop=True)
    cohort = build_cohort(session, unseen)
    model = registry.load_model(champion)
    proba = np.asarray(model.predict_proba(align_to_spec(cohort.features, model.spec)), dtype="float64")
    from scoring.tier_changes import champion_scores
    from scoring.tiers import tiers_for

    rebuilt = pd.DataFrame({
        "lead_id": cohort.leads["id"].astype("int64").to_numpy(), "probability": proba,
        # Score tiers rank against the champion's reference leads, as live scoring does.
        "tier": tiers_for(policy, proba, scores=champion_scores(session, proba)),
        "scored_at": cohort.snapshots.to_numpy(),
        "model_version_id": champion.id, "source": "reconstructed",
    })
    counts["reconstructed"] = len(rebuilt)
    frames = [f for f in (served, rebuilt) if not f.empty]
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    out["scored_at"] = pd.to_datetime(out["scored_at"], utc=True)
    return out


def wilson_upper(successes: int, n: int, z: float = Z_ONE_SIDED) -> float:
    """One-sided upper confidence bound of a rate (Wilson score interval)."""
    if n <= 0:
        return 1.0
    rate = successes / n
    denom = 1 + z * z / n
    centre = rate + z * z / (2 * n)
    spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / denom)


def top_tier_alert(by_tier: dict[str, dict[str, Any]], norms: dict[str, dict[str, Any]], *, share: float,
                   min_leads: int = MIN_TOP_TIER_LEADS) -> tuple[str, Alert | None, dict[str, Any]]:
    """Judge the top tier's conversion on elapsed leads against its norm.

    Returns (status, alert or None, detail). Alerts when the rate is below ``share`` × norm and
    the norm is outside its one-sided 99 % upper bound (not a chance dip); below ``share`` × norm
    within noise warns. Fewer than ``min_leads`` top-tier leads with outcomes: not enough data.
    """
    top = next((t for t in ("A", "B", "C") if t in norms or t in by_tier), "A")
    live = by_tier.get(top) or {}
    norm = norms.get(top) or {}
    n, converted = int(live.get("leads", 0)), int(live.get("converted", 0))
    detail: dict[str, Any] = {"tier": top, "leads": n, "converted": converted, "needed": min_leads,
                              "conversion_rate": live.get("conversion_rate"),
                              "norm": norm.get("conversion_rate"), "share": share}
    if n < min_leads:
        detail["reason"] = f"{n} tier-{top} leads with a known outcome; at least {min_leads} needed"
        return NOT_ENOUGH, None, detail
    if norm.get("conversion_rate") is None:
        detail["reason"] = "the champion has no reference outcomes for a tier norm"
        return NOT_ENOUGH, None, detail
    rate, base = converted / n, float(norm["conversion_rate"])
    floor = share * base
    detail["floor"] = floor
    if rate >= floor:
        return OK, None, detail
    upper = wilson_upper(converted, n)
    detail["upper_bound"] = upper
    what = (f"tier {top} converts {rate:.1%} of {n} elapsed leads, below {share:g}x its norm "
            f"{base:.1%} (floor {floor:.1%})")
    if upper < base:
        return ALERT, Alert(ALERT, "top_tier_conversion", what, rate, floor, action=TOP_TIER_ACTION), detail
    return WARN, Alert(WARN, "top_tier_conversion", f"{what}; within sampling noise (upper bound {upper:.1%})",
                       rate, floor, action=TOP_TIER_ACTION), detail


TOP_TIER_ACTION = ("reps' best leads convert less than the model promised: ask sales whether follow-up of tier A "
                   "changed, check drift and recent accuracy, and run `leadscore retrain --dry-run` to see "
                   "whether a model trained on recent leads ranks them better")
AUC_ACTION = ("the model ranks recent leads worse than when it was trained: run `leadscore retrain --dry-run` "
              "to compare a challenger on the same later leads; promote it if it wins")
CALIBRATION_ACTION = ("scores no longer read as odds: retraining recalibrates (`leadscore retrain`); until then "
                      "treat tiers as a ranking, not as probabilities")


def _performance(session: Session, champion: ModelVersion, ref: Reference | None, as_of: datetime,
                 horizon_days: int, config: MonitoringConfig, out: _Findings) -> None:
    end = as_of - timedelta(days=horizon_days + COHORT_AGE_DAYS)
    start = end - timedelta(days=PERFORMANCE_WINDOW_DAYS)
    perf: dict[str, Any] = {"status": NOT_ENOUGH, "cohort_start": start, "cohort_end": end,
                            "horizon_days": horizon_days, "leads": 0}
    tc: dict[str, Any] = {"status": NOT_ENOUGH, "leads": 0, "cohort_start": start, "cohort_end": end,
                          "horizon_days": horizon_days}
    out.metrics["performance"] = perf
    out.metrics["tier_conversion"] = tc
    ids = cohort_leads(session, start, end)
    policy = active_tier_policy(session)
    counts: dict[str, Any] = {}
    scores = elapsed_scores(session, champion, ids, policy, counts) if ids else pd.DataFrame()
    tc.update(counts)
    tc["cohort_leads"] = len(ids)
    if scores.empty:
        reason = (f"no lead created {start:%Y-%m-%d}..{end:%Y-%m-%d} (whose {horizon_days}-day horizon has "
                  f"elapsed by {as_of:%Y-%m-%d}) has a score at {COHORT_AGE_DAYS} days old"
                  if ids else f"no lead was created {start:%Y-%m-%d}..{end:%Y-%m-%d} (elapsed leads: created at "
                  f"least {horizon_days + COHORT_AGE_DAYS} days before {as_of:%Y-%m-%d})")
        if counts.get("excluded_in_training"):
            reason += f"; {counts['excluded_in_training']} were left out: the champion learnt from them"
        perf["reason"] = tc["reason"] = reason
        perf["rows"] = 0
        out.notes.append(f"live performance not measured: {reason}")
        return
    leads = load_leads_frame(session, scores["lead_id"].tolist()).set_index("id").loc[scores["lead_id"]]
    leads = leads.reset_index()
    known, label = _labels_at(leads, scores["scored_at"], horizon_days, as_of)
    y = label[known]
    p = scores["probability"].to_numpy(dtype="float64")[known]
    tiers = scores["tier"].to_numpy(dtype=object)[known]
    perf["rows"] = perf["leads"] = tc["leads"] = int(known.sum())
    perf["positives"] = tc["converted"] = int(y.sum())
    if perf["rows"] == 0:
        perf["reason"] = tc["reason"] = "no scored lead's outcome is known yet"
        out.notes.append("live performance not measured: no matured scores")
        return
    by_tier: dict[str, dict[str, Any]] = {}
    for tier in sorted({str(t) for t in tiers}):
        mask = np.array([str(t) == tier for t in tiers], dtype=bool)
        by_tier[tier] = {"leads": int(mask.sum()), "converted": int(y[mask].sum()),
                         "conversion_rate": float(y[mask].mean())}
    norms = ref.tier_norms(policy) if ref is not None else {}
    for tier, row in by_tier.items():
        row["norm"] = (norms.get(tier) or {}).get("conversion_rate")
    tc["by_tier"] = by_tier
    tc["norms"] = norms
    tc["policy"] = {"mode": policy.mode, "thresholds": dict(policy.thresholds)}
    status, alert, detail = top_tier_alert(by_tier, norms, share=config.top_tier_share)
    tc["top_tier"] = detail
    tc["status"] = status
    if status == NOT_ENOUGH:
        out.notes.append(f"top-tier conversion not judged: {detail.get('reason')}")
    if alert is not None:
        out.alerts.append(alert)
    perf["conversion_rate"] = float(y.mean())
    perf["mean_predicted"] = float(p.mean())
    perf["conversion_by_tier"] = conversion_by_tier(y, tiers)
    perf["ece"] = expected_calibration_error(y, p)
    perf["calibration"] = calibration_by_band(y, p)
    perf["lift_by_decile"] = _lift(y, p)
    perf["served"], perf["reconstructed"] = counts.get("served", 0), counts.get("reconstructed", 0)
    versions = scores["model_version_id"].to_numpy()[known]
    ids_used, used_counts = np.unique(versions[~pd.isna(versions)].astype("int64"), return_counts=True)
    perf["model_versions"] = {int(i): int(c) for i, c in zip(ids_used, used_counts, strict=True)}
    # Segment models (and earlier champions) are judged on the leads they scored, one by one.
    by_model: dict[str, Any] = {}
    for mv_id in ids_used:
        mask = versions == mv_id
        mv = session.get(ModelVersion, int(mv_id))
        name = mv.version if mv is not None else str(mv_id)
        pos = int(y[mask].sum())
        by_model[name] = {"segment": mv.segment if mv is not None else None, "leads": int(mask.sum()),
                          "converted": pos, "auc": _auc(y[mask], p[mask])
                          if min(pos, int(mask.sum()) - pos) >= MIN_PERFORMANCE_POSITIVES else None}
    perf["by_model"] = by_model
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    auc = _auc(y, p)
    perf["auc"] = auc
    if ref is not None and ref.outcomes:
        perf["reference_ece"] = expected_calibration_error([o[1] for o in ref.outcomes], [o[0] for o in ref.outcomes])
    before = len(out.alerts)
    _calibration(y, p, perf, config, out)
    if positives < MIN_PERFORMANCE_POSITIVES or negatives < MIN_PERFORMANCE_POSITIVES:
        perf["reason"] = (f"{positives} conversions among {len(y)} elapsed leads; at least "
                          f"{MIN_PERFORMANCE_POSITIVES} of each class needed to judge the AUC")
        out.notes.append(f"live AUC not judged: {perf['reason']}")
        perf["status"] = _worst(out.alerts[before:]) if len(out.alerts) > before else NOT_ENOUGH
        return
    se = auc_standard_error(auc, positives, negatives)
    perf["auc_se"] = se
    maker = session.get(ModelVersion, int(ids_used[np.argmax(used_counts)])) if len(ids_used) else None
    maker_ref = ensure_reference(session, maker, as_of=as_of) if maker is not None else None
    baseline = maker_ref.baseline_auc if maker_ref is not None else None
    if baseline is None and maker is not None:
        baseline = registry.recorded_test_auc(maker)
    perf["baseline_auc"] = baseline
    if baseline is None or not math.isfinite(auc):
        perf["status"] = _worst(out.alerts[before:])
        return
    drop = baseline - auc
    perf["auc_drop"] = drop
    # The baseline is itself an estimate: both standard errors count.
    base_se = (auc_standard_error(baseline, maker_ref.baseline_positives,
                                  maker_ref.baseline_rows - maker_ref.baseline_positives)
               if maker_ref is not None and maker_ref.baseline_auc is not None else 0.0)
    se = math.sqrt(se * se + (base_se if math.isfinite(base_se) else 0.0) ** 2)
    perf["auc_drop_se"] = se
    if drop > config.auc_drop_alert:
        if drop - Z_ONE_SIDED * se > 0:
            out.alerts.append(Alert(ALERT, "auc_drop", f"live AUC {auc:.3f} is {drop:.3f} below the model's "
                                    f"baseline {baseline:.3f} ({len(y)} elapsed leads)", drop,
                                    config.auc_drop_alert, action=AUC_ACTION))
        else:
            out.alerts.append(Alert(WARN, "auc_drop", f"live AUC {auc:.3f} is {drop:.3f} below baseline "
                                    f"{baseline:.3f}, within sampling noise (±{se:.3f})", drop,
                                    config.auc_drop_alert, action=AUC_ACTION))
    perf["status"] = _worst(out.alerts[before:])


def _calibration(y: np.ndarray, p: np.ndarray, perf: dict[str, Any], config: MonitoringConfig,
                 out: _Findings) -> None:
    """Calibration drift: the ECE grew by more than ``ece_alert`` over the champion's own reference
    ECE (leads of its test period seen at the same age) *and* the mean prediction is far from the
    observed rate (3 standard errors and 25 %): alert; either alone warns."""
    observed, predicted = float(y.mean()), float(p.mean())
    se_rate = math.sqrt(max(predicted * (1 - predicted), 1e-9) / len(y))
    mean_off = abs(observed - predicted) > 3 * se_rate and abs(observed - predicted) > 0.25 * max(predicted, 1e-9)
    ece = float(perf.get("ece") or 0.0)
    base = float(perf.get("reference_ece") or 0.0)
    grew = ece - base
    perf["ece_increase"] = grew
    ece_high = grew > config.ece_alert
    moved = (f"ECE {ece:.3f} vs {base:.3f} on the reference leads ({grew:+.3f}; alert line "
             f"+{config.ece_alert:g})")
    if mean_off and ece_high:
        out.alerts.append(Alert(ALERT, "calibration", f"scores are miscalibrated: {observed:.1%} converted vs "
                                f"{predicted:.1%} predicted; {moved}", grew, config.ece_alert,
                                action=CALIBRATION_ACTION))
    elif mean_off:
        out.alerts.append(Alert(WARN, "calibration", f"scores are miscalibrated: {observed:.1%} converted vs "
                                f"{predicted:.1%} predicted; {moved}", observed - predicted, None,
                                action=CALIBRATION_ACTION))
    elif ece_high:
        out.alerts.append(Alert(WARN, "calibration", f"calibration drifted: {moved}, {len(y)} elapsed leads", grew,
                                config.ece_alert, action=CALIBRATION_ACTION))


def calibration_by_band(y: np.ndarray, p: np.ndarray, bands: Sequence[float] = SCORE_BANDS
                        ) -> list[dict[str, Any]]:
    """Observed vs mean predicted conversion per probability band (non-empty bands only)."""
    out: list[dict[str, Any]] = []
    for lo, hi in zip(bands[:-1], bands[1:], strict=True):
        mask = (p >= lo) & (p < hi)
        if mask.any():
            out.append({"band": f"{round(lo * 100)}-{min(100, round(hi * 100))}", "predicted": float(p[mask].mean()),
                        "observed": float(y[mask].mean()), "count": int(mask.sum())})
    return out


def _lift(y: np.ndarray, p: np.ndarray) -> list[float]:
    base = y.mean()
    if base <= 0 or len(y) < 10:
        return []
    ranked = y[np.argsort(-p, kind="stable")]
    return [float(part.mean() / base) for part in np.array_split(ranked, 10)]


def previous_version(session: Session, champion: ModelVersion) -> ModelVersion | None:
    """The version the champion replaced: the latest one promoted before it (same segment)."""
    stmt = select(ModelVersion).where(ModelVersion.id != champion.id, ModelVersion.promoted_at.is_not(None))
    stmt = stmt.where(ModelVersion.segment.is_(None) if champion.segment is None
                      else ModelVersion.segment == champion.segment)
    if champion.promoted_at is not None:
        stmt = stmt.where(ModelVersion.promoted_at < champion.promoted_at)
    return session.scalars(stmt.order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())).first()


def _importance_change(session: Session, champion: ModelVersion, ref: Reference, as_of: datetime,
                       out: _Findings) -> None:
    prev = previous_version(session, champion)
    if prev is None:
        out.notes.append("no previous champion to compare feature importance with")
        return
    prev_ref = ensure_reference(session, prev, as_of=as_of)
    if prev_ref is None:
        out.notes.append(f"previous version {prev.version} has no reference window: importance not compared")
        return
    names = sorted(set(ref.importance) | set(prev_ref.importance))
    pairs = [(n, ref.importance.get(n, 0.0), prev_ref.importance.get(n, 0.0)) for n in names]
    pairs.sort(key=lambda r: -abs(r[1] - r[2]))
    # Half the L1 distance of two share vectors: 0 = same ranking weights, 1 = disjoint.
    shift = 0.5 * sum(abs(now - before) for _n, now, before in pairs)
    rows = [{"feature": n, "champion": now, "previous": before} for n, now, before in pairs[:10]]
    out.metrics["importance_change"] = {"previous_version": prev.version, "shift": shift, "top_changes": rows}


FRESHNESS_ACTION = ("scores are computed on stale CRM data: check `leadscore status` and the worker log for the "
                    "failing sync (credentials, API limits, network)")
WRITEBACK_ACTION = ("reps see old scores for these leads: `leadscore writeback` shows why the CRM refused them "
                    "(field permissions, deleted records, validation rules)")


def data_clock(session: Session) -> datetime | None:
    """The CRM's time as synced: the newest modification time of any synced lead or activity
    (None for an empty store). The monitor cuts its windows here, not on the machine's clock: the
    data may lag the wall clock (a demo's simulated CRM, an import of history, a stalled sync)."""
    newest = [session.scalar(select(func.max(Lead.crm_modified_at))),
              session.scalar(select(func.max(Activity.crm_modified_at)))]
    present = [_as_utc(t) for t in newest if t is not None]
    return max(present) if present else None


def _crm_now(session: Session, as_of: datetime, explicit: bool) -> datetime:
    """The CRM's "now" for freshness. With an explicit ``as_of`` that is it. Otherwise the CRM's
    clock at the newest successful sync (its ``server_time``) plus the real time that has passed
    since that sync finished: the CRM's clock keeps running when our syncs stop."""
    if explicit:
        return as_of
    row = session.execute(
        select(SyncRun.server_time, SyncRun.finished_at).where(SyncRun.status == "succeeded",
                                                               SyncRun.finished_at.is_not(None))
        .order_by(SyncRun.finished_at.desc()).limit(1)).first()
    if row is None or row[0] is None or row[1] is None:
        return as_of
    elapsed = datetime.now(UTC) - _as_utc(row[1])
    return max(as_of, _as_utc(row[0]) + max(elapsed, timedelta(0)))


def _freshness(session: Session, as_of: datetime, config: MonitoringConfig, out: _Findings, *,
               explicit: bool = True) -> None:
    now = _crm_now(session, as_of, explicit)
    # A sync's time on the CRM's clock: the server time it read (the wall clock of its end when absent).
    sync_time = func.coalesce(SyncRun.server_time, SyncRun.finished_at)
    rows = session.execute(
        select(Connection.id, Connection.name, func.max(sync_time))
        .outerjoin(SyncRun, (SyncRun.connection_id == Connection.id) & (SyncRun.status == "succeeded")
                   & (sync_time <= now))
        .group_by(Connection.id, Connection.name)
        .order_by(Connection.name)
    ).all()
    fresh: dict[str, Any] = {}
    limit = timedelta(hours=config.freshness_hours)
    found: list[Alert] = []
    for _id, name, last in rows:
        last_utc = parse_time(last)
        age_hours = (now - last_utc).total_seconds() / 3600 if last_utc is not None else None
        fresh[name] = {"last_success": last_utc, "age_hours": age_hours}
        if last_utc is None:
            found.append(Alert(WARN, "freshness", f"connection {name} has never synced successfully",
                               action=FRESHNESS_ACTION))
        elif now - last_utc > limit:
            found.append(Alert(ALERT, "freshness", f"connection {name}: last successful sync {age_hours:.1f} h "
                               f"ago on the CRM's clock (limit {config.freshness_hours:g} h)", age_hours,
                               config.freshness_hours, action=FRESHNESS_ACTION))
    out.metrics["freshness"] = fresh
    out.metrics["clock"]["crm_now"] = now
    failed = int(session.scalar(select(func.count(Outbox.id)).where(Outbox.status == "failed")) or 0)
    stuck = int(session.scalar(
        select(func.count(Outbox.id)).where(Outbox.status == "pending", Outbox.attempts > 0,
                                            Outbox.created_at < now - limit)) or 0)
    out.metrics["outbox"] = {"failed": failed, "pending_retrying": stuck}
    if failed:
        found.append(Alert(ALERT, "writeback", f"{failed} CRM writes failed for good", float(failed), 0.0,
                           action=WRITEBACK_ACTION))
    if stuck:
        found.append(Alert(WARN, "writeback", f"{stuck} CRM writes still retrying after "
                           f"{config.freshness_hours:g} h", float(stuck), 0.0, action=WRITEBACK_ACTION))
    out.alerts.extend(found)
    out.metrics["measures"]["freshness"] = {"status": _worst(found) if rows else NOT_ENOUGH,
                                            "connections": len(rows)}


def run_monitor(
    session: Session,
    *,
    as_of: datetime | None = None,
    config: MonitoringConfig,
    horizon_days: int | None = None,
) -> MonitorReport:
    """Measure the champion's health as of ``as_of`` and write a ``monitor_report``.

    ``as_of`` None uses the data's clock (:func:`data_clock`: the newest synced modification time),
    never the machine's. ``horizon_days`` defaults to the champion's training horizon. Each measure
    records its status (ok | warn | alert | not enough data) with the counts it used; the overall
    status is the worst alert, or "not enough data" when neither drift nor tier conversion nor
    accuracy could be measured. Flushes, never commits. Alerts are logged at WARNING and POSTed to
    ``config.webhook_url`` when set (failures logged only).
    """
    explicit = as_of is not None
    clock = _as_utc(as_of) if as_of is not None else data_clock(session)
    out = _Findings()
    out.metrics["clock"] = {"as_of": clock, "source": "--as-of" if explicit else "newest synced modification"}
    out.metrics["measures"] = {}
    if clock is None:
        clock = datetime.now(UTC)
        out.metrics["clock"] |= {"as_of": clock, "source": "no synced data (machine clock)"}
        out.notes.append("no lead or activity synced yet: nothing to measure")
    as_of = clock
    champion = registry.champion(session)
    measured = False
    if champion is None:
        out.alerts.append(Alert(WARN, "no_model", "no champion model: run `leadscore train`",
                                action="train a first model: `leadscore train`"))
    else:
        horizon = horizon_days or horizon_of(champion)
        out.metrics["champion"] = {"version": champion.version, "family": champion.family,
                                   "trained_as_of": trained_at(champion)}
        ref = ensure_reference(session, champion, as_of=as_of)
        if ref is None:
            out.notes.append("the champion records no training window: drift not measured")
            out.metrics["drift"] = {"status": NOT_ENOUGH, "leads": 0,
                                    "reason": "the champion records no training window to compare with"}
        else:
            out.metrics["reference"] = {"cohort_start": ref.cohort_start, "cohort_end": ref.cohort_end,
                                        "rows": ref.rows, "baseline_auc": ref.baseline_auc,
                                        "top_features": list(ref.features)}
            _drift(session, champion, ref, as_of, config, out)
            _importance_change(session, champion, ref, as_of, out)
        _performance(session, champion, ref, as_of, horizon, config, out)
        shadow_rows = [shadow_comparison(session, mv, as_of=as_of, horizon_days=horizon)
                       for mv in registry.shadows(session) if mv.segment is None]
        if shadow_rows:
            out.metrics["shadow"] = shadow_rows
            out.notes.extend(describe_shadow(c) for c in shadow_rows)
        measured = any((out.metrics.get(k) or {}).get("status") not in (None, NOT_ENOUGH)
                       for k in ("drift", "tier_conversion", "performance"))
        for key in ("drift", "tier_conversion", "performance"):
            part = out.metrics.get(key) or {}
            out.metrics["measures"][key] = {"status": part.get("status", NOT_ENOUGH), "leads": part.get("leads", 0),
                                            **({"reason": part["reason"]} if part.get("reason") else {})}
    _freshness(session, as_of, config, out, explicit=explicit)
    status = _worst(out.alerts)
    if status == OK and not measured:
        status = NOT_ENOUGH
    out.metrics["notes"] = out.notes
    report = MonitorReport(
        model_version_id=champion.id if champion is not None else None, as_of=as_of, status=status,
        metrics=_json(out.metrics), alerts=[a.to_dict() for a in out.alerts],
    )
    session.add(report)
    session.flush()
    for a in out.alerts:
        log.warning("monitor %s [%s] %s", a.level, a.kind, a.message)
    if config.webhook_url and out.alerts:
        send_webhook(config.webhook_url, report, champion)
    return report


def _shadow_at_age(session: Session, mv: ModelVersion, age_days: int) -> pd.DataFrame:
    rows = session.execute(
        select(ShadowScore.lead_id, ShadowScore.probability, ShadowScore.scored_at, Lead.crm_created_at)
        .join(Lead, Lead.id == ShadowScore.lead_id).where(ShadowScore.model_version_id == mv.id)
    ).all()
    df = pd.DataFrame([tuple(r) for r in rows], columns=["lead_id", "probability", "scored_at", "created_at"])
    if df.empty:
        return df
    df["scored_at"] = pd.to_datetime(df["scored_at"], utc=True)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    df = df[(df["scored_at"] >= df["created_at"]) & (df["scored_at"] <= df["created_at"] + pd.Timedelta(days=age_days))]
    return df.sort_values(["lead_id", "scored_at"]).groupby("lead_id", as_index=False).tail(1).reset_index(drop=True)


def shadow_comparison(session: Session, mv: ModelVersion, *, as_of: datetime, horizon_days: int,
                      seed: int = 0) -> dict[str, Any]:
    """Champion (as served) vs the shadow ``mv`` on the same leads whose outcome is known: each
    lead's score from both at :data:`COHORT_AGE_DAYS` days old, labelled "converted within the
    horizon after the served score"."""
    from scoring.compare import paired_bootstrap

    out: dict[str, Any] = {"version": mv.version, "status": NOT_ENOUGH, "leads": 0, "needed": MIN_PERFORMANCE_POSITIVES}
    shadow = _shadow_at_age(session, mv, COHORT_AGE_DAYS)
    out["shadow_scored_leads"] = len(shadow)
    if shadow.empty:
        out["reason"] = "no lead has a shadow score from its first days yet"
        return out
    served = _scores_at_age(session, shadow["lead_id"].astype("int64").tolist(), COHORT_AGE_DAYS)
    if served.empty:
        out["reason"] = f"none of the {len(shadow)} shadow-scored leads has a served score from its first days"
        return out
    both = served.merge(shadow[["lead_id", "probability"]], on="lead_id", suffixes=("_champion", "_shadow"))
    leads = load_leads_frame(session, both["lead_id"].tolist()).set_index("id").loc[both["lead_id"]].reset_index()
    known, label = _labels_at(leads, both["scored_at"], horizon_days, as_of)
    y = label[known]
    p_champion = both["probability_champion"].to_numpy(dtype="float64")[known]
    p_shadow = both["probability_shadow"].to_numpy(dtype="float64")[known]
    pos = int(y.sum())
    out.update({"leads": int(known.sum()), "converted": pos, "awaiting_outcome": int((~known).sum())})
    if min(pos, len(y) - pos) < MIN_PERFORMANCE_POSITIVES:
        out["reason"] = (f"{pos} conversions among {len(y)} leads with a known outcome; at least "
                         f"{MIN_PERFORMANCE_POSITIVES} of each class needed ({int((~known).sum())} still awaiting "
                         "their outcome)")
        return out
    d, low, high = paired_bootstrap(y, p_champion, p_shadow, both["lead_id"].to_numpy()[known], seed=seed)
    out.update({"status": "measured", "champion_auc": _auc(y, p_champion), "shadow_auc": _auc(y, p_shadow),
                "improvement": d, "ci_low": low, "ci_high": high,
                "champion_versions": sorted({int(v) for v in both["model_version_id"].dropna()})})
    return out


def describe_shadow(comparison: dict[str, Any]) -> str:
    """One line for the CLI and the monitor."""
    c = comparison
    if c.get("status") != "measured":
        return f"shadow {c['version']}: not enough data ({c.get('reason', '')})"
    return (f"shadow {c['version']}: AUC {c['shadow_auc']:.3f} vs champion {c['champion_auc']:.3f} on the same "
            f"{c['leads']:,} leads ({c['converted']} converted; difference {c['improvement']:+.3f}, 90% CI "
            f"{c['ci_low']:+.3f}..{c['ci_high']:+.3f})")


def send_webhook(url: str, report: MonitorReport, champion: ModelVersion | None) -> bool:
    """POST the report's alerts as JSON; True on a 2xx answer. Never raises on network errors."""
    payload = {
        "source": "leadscore", "report_id": report.id, "status": report.status,
        "as_of": report.as_of.isoformat(), "model_version": champion.version if champion else None,
        "alerts": report.alerts,
    }
    try:
        response = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        log.warning("monitor webhook %s failed: %s", url, exc.__class__.__name__)
        return False
    if not 200 <= response.status_code < 300:
        log.warning("monitor webhook %s answered HTTP %s", url, response.status_code)
        return False
    return True


def latest_report(session: Session, *, as_of: datetime | None = None) -> MonitorReport | None:
    """The most recent monitor report (by ``as_of``), optionally no later than ``as_of``."""
    stmt = select(MonitorReport)
    if as_of is not None:
        stmt = stmt.where(MonitorReport.as_of <= as_of)
    return session.scalars(stmt.order_by(MonitorReport.as_of.desc(), MonitorReport.id.desc())).first()


def reports(session: Session, *, as_of: datetime | None = None, limit: int = 365) -> list[MonitorReport]:
    """Monitor reports in time order (the last ``limit``)."""
    stmt = select(MonitorReport)
    if as_of is not None:
        stmt = stmt.where(MonitorReport.as_of <= as_of)
    rows = list(session.scalars(stmt.order_by(MonitorReport.as_of.desc(), MonitorReport.id.desc()).limit(limit)))
    return rows[::-1]


__all__ = [
    "ALERT",
    "NOT_ENOUGH",
    "OK",
    "WARN",
    "Distribution",
    "Reference",
    "auc_standard_error",
    "build_cohort",
    "calibration_by_band",
    "categorical_distribution",
    "compute_reference",
    "data_clock",
    "elapsed_scores",
    "ensure_reference",
    "feature_importance",
    "latest_report",
    "numeric_distribution",
    "psi",
    "reports",
    "run_monitor",
    "describe_shadow",
    "send_webhook",
    "shadow_comparison",
    "top_tier_alert",
    "trained_at",
]
