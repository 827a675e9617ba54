"""Monitoring and retraining against the simulated funnel, day by day (2-3 minutes per World): the
scenarios and their checks, run by tests/scoring/test_monitor_drift_{1,2,3}.py (one World each, so
`make test`'s workers run them side by side) and tests/scoring/test_monitor_tier_a_halving.py.

A crmsim ``World`` is generated once (its future included, so outcomes of the scored leads are
known); the store is then fed day by day with what a CRM would show on that day (new leads,
activities, conversions, a succeeded sync run per connection), the champion scores the recent
leads, the monitor runs and the retrainer decides.

crmsim's drift is a market shift: from DRIFT_DAY on, most new leads come from small healthcare and
retail companies, many through webinars, and what drives conversion changes too.

Asserted: without drift (the 60 days before it), no alert and no promotion (six retrainings);
with drift, no alert before it and an alert within 14 days after it; a challenger trained on
post-drift leads only is promoted; on the leads created after that promotion, each scored at 14
days by the champion in place then, the AUC is within 0.03 of the oracle's (the World's true
probability) and better than the stale champion's, which trails the oracle by more than before
the drift. 14 days is the end of crmsim's early window: from then on the oracle knows nothing the
CRM does not show (before it, it also knows engagement still to come). It runs on Worlds 3, 7 and 11
(``LEADSCORE_SIM_SEEDS`` picks others: the k-th file runs every third of them from the k-th on); the
numbers of all three are in docs/monitoring.md.

A second, smaller World (no drift) checks the early top-tier measure: from HALVING_DAY on, tier A
converts half as often; the top-tier alert comes within 21 days and never before.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
from crmsim.funnel import EPOCH, World
from scoring import registry
from scoring.features import align_to_spec
from scoring.monitor import build_cohort, cohort_leads, latest_report, run_monitor
from scoring.monitoring.elapsed import scores_at_age
from scoring.personas import company_key
from scoring.retrain import retrain_if_due
from scoring.service import score_leads, train_from_store
from scoring.tiers import set_policy
from store.models import Activity, Connection, Lead, LeadScore, SyncRun

# The scenario: small enough for two shared cores, large enough for a stable AUC.
# Several Worlds, not one (each 2-3 minutes alone on two cores; a file shares its World between its
# checks): 3, 7 and 11 by default (docs/monitoring.md has each one's numbers); LEADSCORE_SIM_SEEDS
# picks others.
SEEDS = tuple(int(s) for s in os.environ.get("LEADSCORE_SIM_SEEDS",
                                             os.environ.get("LEADSCORE_SIM_SEED", "3,7,11")).split(","))
LEADS = 16875
GENERATED_DAYS = 540  # the last scored leads need 90 days of future for their outcome
START_DAY = 170  # the first champion is trained here
NO_DRIFT_DAYS = 60
DRIFT_DAY = START_DAY + NO_DRIFT_DAYS + 10
DRIFT_RUN_DAYS = 200
SLOW_STEP_DAYS = 4  # after the first two weeks of drift, a step every 4 days keeps the test shorter
HORIZON_DAYS = 45
WINDOW_DAYS = 90
HOLDOUT_DAYS = 21
ALERT_COOLDOWN_DAYS = 6
TRAINING = TrainingConfig(horizon_days=HORIZON_DAYS, min_per_class=150)
SCHEDULES = ScheduleConfig(retrain_days=10)
MONITORING = MonitoringConfig()
FAMILIES = ("catboost",)
ITERATIONS = 150
GRID = ({"depth": 4, "learning_rate": 0.1},)
_seq = itertools.count(1)


def day(n: float) -> datetime:
    return EPOCH + timedelta(days=n)


class _Collect:
    """A FunnelSink that keeps the activities (the World itself keeps people only)."""

    def __init__(self) -> None:
        self.activities: list[Any] = []

    def put_owner(self, owner: Any) -> None: ...
    def put_queue(self, queue: Any) -> None: ...
    def put_campaign(self, campaign: Any) -> None: ...
    def put_company(self, company: Any) -> None: ...
    def put_person(self, person: Any) -> None: ...

    def put_activity(self, activity: Any) -> None:
        self.activities.append(activity)

    def delete_person(self, person_key: str) -> None: ...

    def crm_id(self, person_key: str) -> str | None:
        return person_key


def generated_world(seed: int, drift_day: int | None) -> tuple[World, _Collect]:
    world = World(seed=seed, leads=LEADS, history_days=GENERATED_DAYS, drift_day=drift_day, dq_rate=0.01)
    sink = _Collect()
    world.attach(sink)
    world.generate()
    return world, sink


class StoreFeed:
    """Feeds the store with what the CRM shows at a time, in increments (leads, activity,
    conversions) plus one succeeded sync run per connection, as a daily sync would."""

    def __init__(self, session: Session, world: World, sink: _Collect) -> None:
        self.session = session
        self.world = world
        self.conns = {}
        for crm in ("salesforce", "hubspot"):
            conn = Connection(name=f"{crm}-sim-{next(_seq)}", kind=crm)
            session.add(conn)
            self.conns[crm] = conn
        session.flush()
        self.people = sorted(world.people.values(), key=lambda p: p.created_at)
        self.activities = sorted(sink.activities, key=lambda a: a.occurred_at)
        self.conversions = sorted(
            ((p.converted_at, p.key) for p in self.people if p.converted_at is not None), key=lambda c: c[0]
        )
        self.crm_of = {p.key: p.crm for p in self.people}
        self.ids: dict[str, int] = {}
        # Drops conversions before they reach the store (the tier-A scenario: sales stop following up).
        self.conversion_filter: Callable[[list[tuple[datetime, str]]], list[tuple[datetime, str]]] | None = None
        self._p = self._a = self._c = 0
        self.now: datetime | None = None

    def sync_to(self, now: datetime) -> None:
        session = self.session
        rows = []
        while self._p < len(self.people) and self.people[self._p].created_at <= now:
            p = self.people[self._p]
            self._p += 1
            rows.append({
                "connection_id": self.conns[p.crm].id, "crm_id": p.key, "email": p.email,
                "first_name": p.first_name, "last_name": p.last_name, "title": p.title, "company": p.company_name,
                "company_key": company_key(p.company_name, p.email), "industry": p.industry,
                "employees": p.employees if p.employees is None or p.employees < 2**31 else None,
                "annual_revenue": p.annual_revenue, "country": p.country, "lead_source": p.lead_source,
                "campaign": p.campaign_key, "status": "Open", "is_converted": False, "converted_at": None,
                "crm_created_at": p.created_at, "crm_modified_at": p.created_at, "attributes": {}, "raw": {},
                "is_deleted": False, "synced_at": now, "inputs_changed_at": now,
            })
        if rows:
            session.execute(Lead.__table__.insert(), rows)
            keys = [r["crm_id"] for r in rows]
            for i in range(0, len(keys), 900):
                self.ids.update(dict(session.execute(
                    select(Lead.crm_id, Lead.id).where(Lead.crm_id.in_(keys[i : i + 900]))).all()))
        acts = []
        while self._a < len(self.activities) and self.activities[self._a].occurred_at <= now:
            a = self.activities[self._a]
            self._a += 1
            lead_id = self.ids.get(a.person_key)
            if lead_id is None:
                continue
            acts.append({
                "connection_id": self.conns[self.crm_of[a.person_key]].id, "crm_id": a.key,
                "lead_crm_id": a.person_key, "lead_id": lead_id, "type": a.type, "occurred_at": a.occurred_at,
                "detail": a.detail, "campaign": a.campaign_key, "crm_modified_at": a.occurred_at, "raw": {},
                "is_deleted": False, "synced_at": now,
            })
        if acts:
            session.execute(Activity.__table__.insert(), acts)
        due = []
        while self._c < len(self.conversions) and self.conversions[self._c][0] <= now:
            due.append(self.conversions[self._c])
            self._c += 1
        if self.conversion_filter is not None:
            due = self.conversion_filter(due)
        conv = [{"b_id": self.ids[key], "b_at": at} for at, key in due if key in self.ids]
        if conv:
            table = Lead.__table__
            session.execute(
                table.update().where(table.c.id == bindparam("b_id"))
                .values(is_converted=True, converted_at=bindparam("b_at"), crm_modified_at=bindparam("b_at")),
                conv,
            )
        for conn in self.conns.values():
            session.add(SyncRun(connection_id=conn.id, stream="leads", status="succeeded", started_at=now,
                                finished_at=now, server_time=now, records=len(rows)))
        session.flush()
        self.now = now


def score_recent(session: Session, now: datetime, days: int = 8) -> None:
    """Score the leads of the last ``days`` whose inputs changed, as the scoring task would."""
    ids = list(session.scalars(select(Lead.id).where(Lead.crm_created_at > now - timedelta(days=days))))
    if not ids:
        return
    score_leads(session, as_of=now, lead_ids=ids)
    # score_leads stamps rows with the wall clock; the simulation runs on the CRM's clock. (The
    # monitor reads a score's as_of; what this keeps is staleness: the world's activities were all
    # stored before the run, so a score stamped with the wall clock would never look older than a
    # lead's activity, and no lead would be rescored as its activities "arrive".)
    session.execute(update(LeadScore).where(LeadScore.scored_at > now).values(scored_at=now))
    session.flush()


@dataclass
class Timeline:
    statuses: dict[int, str] = field(default_factory=dict)
    alerts: dict[int, list[str]] = field(default_factory=dict)
    promotions: dict[int, str] = field(default_factory=dict)
    retrains: dict[int, str] = field(default_factory=dict)


def step(session: Session, feed: StoreFeed, d: int, timeline: Timeline) -> None:
    """One simulated day: sync, score recent leads, monitor, maybe retrain."""
    now = day(d)
    feed.sync_to(now)
    score_recent(session, now)
    report = run_monitor(session, as_of=now, config=MONITORING, horizon_days=HORIZON_DAYS)
    timeline.statuses[d] = report.status
    timeline.alerts[d] = [f"{a['kind']}: {a['message']}" for a in report.alerts if a["level"] == "alert"]
    result = retrain_if_due(session, as_of=now, training=TRAINING, schedules=SCHEDULES, monitoring=MONITORING,
                            families=FAMILIES, catboost_iterations=ITERATIONS, catboost_grid=GRID,
                            window_days=WINDOW_DAYS, holdout_days=HOLDOUT_DAYS,
                            alert_cooldown_days=ALERT_COOLDOWN_DAYS)
    if result.due:
        timeline.retrains[d] = result.decision
    if result.promoted and result.challenger:
        timeline.promotions[d] = result.challenger
    session.commit()


def served_auc(session: Session, world: World, created_from: datetime, created_to: datetime,
               promotions: dict[int, str], stale: str) -> dict[str, Any]:
    """AUC of the scores leads got at 14 days from the champion in place then (``promotions``:
    day -> promoted version, ``stale`` before the first; the last one serves after the run), the
    stale champion's AUC on the same leads, and the oracle's; outcome: converted within 90 days."""
    truth = {t["person_key"]: t for t in world.truth()}
    cohort = build_cohort(session, cohort_leads(session, created_from, created_to), age_days=14)
    keys = list(cohort.leads["crm_id"])
    keep = np.array([truth[k]["horizon_elapsed"] and truth[k]["true_probability"] is not None for k in keys])
    y = np.array([truth[k]["converted_within_90d"] for k in keys], dtype=int)
    seen = ((cohort.snapshots - pd.Timestamp(EPOCH)) / pd.Timedelta(days=1)).to_numpy()
    served = np.full(len(keys), np.nan)
    timeline = sorted(promotions.items())
    versions = {v for _d, v in timeline} | {stale}
    proba = {}
    for version in versions:
        model = registry.load_model(registry.get_version(session, version))
        proba[version] = np.asarray(model.predict_proba(align_to_spec(cohort.features, model.spec)))
    in_place = []
    for i, at in enumerate(seen):
        version = next((v for d, v in reversed(timeline) if d <= at), stale)
        served[i] = proba[version][i]
        in_place.append(version)
    oracle = np.array([truth[k]["true_probability"] or 0.0 for k in keys])
    return {"leads": int(keep.sum()), "positives": int(y[keep].sum()),
            "served_versions": sorted(set(np.asarray(in_place, dtype=object)[keep])),
            "model_auc": float(roc_auc_score(y[keep], served[keep])),
            "stale_auc": float(roc_auc_score(y[keep], proba[stale][keep])),
            "oracle_auc": float(roc_auc_score(y[keep], oracle[keep]))}


@dataclass
class Run:
    stable: Timeline
    drift: Timeline
    first_champion: str
    auc: dict[str, dict[str, float]] = field(default_factory=dict)
    performance: dict[int, dict[str, Any]] = field(default_factory=dict)
    stale_champion: str = ""
    post_drift_champion: str | None = None
    score_psi: dict[int, float] = field(default_factory=dict)
    broad: dict[int, int] = field(default_factory=dict)  # top features above psi_alert
    feature_psi: dict[int, dict[str, float]] = field(default_factory=dict)
    # Promoted after the drift: version -> (day, train_start, train_end) of its training window.
    promoted: dict[str, tuple[int, datetime | None, datetime | None]] = field(default_factory=dict)


def run_scenario(session: Session, seed: int) -> Run:
    """One World that drifts at DRIFT_DAY. Phase 1: the 60 days after the first champion, all before
    the drift (every lead created then follows the pre-drift regime): the no-drift check. Phase 2:
    daily for two weeks after the drift, then every SLOW_STEP_DAYS until DRIFT_DAY + DRIFT_RUN_DAYS."""
    drifting, sink = generated_world(seed=seed, drift_day=DRIFT_DAY)
    feed = StoreFeed(session, drifting, sink)
    feed.sync_to(day(START_DAY))
    first = train_from_store(session, as_of=day(START_DAY), config=TRAINING, families=FAMILIES,
                             catboost_iterations=ITERATIONS).model_version.version
    session.commit()
    stable = Timeline()
    for d in range(START_DAY + 1, START_DAY + NO_DRIFT_DAYS + 1):
        step(session, feed, d, stable)

    drift = Timeline()
    run = Run(stable=stable, drift=drift, first_champion=first)
    d = START_DAY + NO_DRIFT_DAYS
    while d < DRIFT_DAY + DRIFT_RUN_DAYS:
        d += 1 if d < DRIFT_DAY + 14 else SLOW_STEP_DAYS
        step(session, feed, d, drift)
        report = latest_report(session)
        assert report is not None
        run.performance[d] = dict(report.metrics.get("performance") or {})
        run.score_psi[d] = float((report.metrics.get("drift") or {}).get("score_psi") or float("nan"))
        psis = (report.metrics.get("drift") or {}).get("feature_psi") or {}
        run.broad[d] = int((report.metrics.get("drift") or {}).get("features_above_alert") or 0)
        run.feature_psi[d] = {k: round(float(v), 3) for k, v in psis.items() if v and v > MONITORING.psi_warn}
    for x, version in sorted(drift.promotions.items()):
        mv = registry.get_version(session, version)
        run.promoted[version] = (x, mv.train_start, mv.train_end)
    # The champion in place when the drift began, and the first challenger that learnt from it.
    stale = drift.promotions[max(x for x in drift.promotions if x < DRIFT_DAY)] \
        if any(x < DRIFT_DAY for x in drift.promotions) else first
    run.stale_champion = stale
    post = sorted((x, v) for v, (x, _s, e) in run.promoted.items()
                  if x >= DRIFT_DAY and e is not None and e > day(DRIFT_DAY))
    if post:
        run.post_drift_champion = post[0][1]
    # Seen at 14 days (the end of the early window), from where the oracle is the best reachable.
    last_created = GENERATED_DAYS - 90  # the last leads whose 90-day outcome is known
    feed.sync_to(day(last_created + 14))
    run.auc["before_drift"] = served_auc(session, drifting, day(DRIFT_DAY - 70), day(DRIFT_DAY), {}, first)
    if post:
        run.auc["served_after_promotion"] = served_auc(session, drifting, day(post[0][0]), day(last_created),
                                                       drift.promotions, stale)
    alerted = sorted(x for x, a in drift.alerts.items() if a and x >= DRIFT_DAY)
    broad_only = [x - DRIFT_DAY for x, n in sorted(run.broad.items())
                  if n >= 3 and drift.statuses[x] == "alert" and not run.score_psi[x] > MONITORING.psi_warn]
    # Shown by `pytest -rP`: the numbers docs/monitoring.md reports.
    print(f"seed {seed}: stable: alerts {sum(1 for a in stable.alerts.values() if a)}, "
          f"retrainings {len(stable.retrains)}, "
          f"promotions {len(stable.promotions)}; drift at day {DRIFT_DAY}: first alert "
          f"{alerted[0] - DRIFT_DAY if alerted else None} days after "
          f"({drift.alerts[alerted[0]] if alerted else None}), promotions "
          f"{[(x - DRIFT_DAY, run.promoted[v][1], run.promoted[v][2]) for x, v in sorted(drift.promotions.items())]}"
          f" days after; retrains {[(x - DRIFT_DAY, r) for x, r in sorted(drift.retrains.items())]}; "
          f"score psi {[(x - DRIFT_DAY, round(v, 3)) for x, v in sorted(run.score_psi.items())]}; "
          f"feature psi {[(x - DRIFT_DAY, v) for x, v in sorted(run.feature_psi.items()) if x <= DRIFT_DAY + 22]}; "
          f"alerts with 3+ features above psi_alert and score PSI <= psi_warn at days {broad_only}; "
          f"auc {run.auc}")
    return run


DRIFT_FILES = 3  # tests/scoring/test_monitor_drift_{1,2,3}.py


@contextmanager
def sim_store(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Session]:
    """A session on a fresh SQLite store of its own, for one scenario (disposed after)."""
    from store.db import make_engine
    from store.models import Base

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp(name) / 'sim.db'}")
    Base.metadata.create_all(engine)
    with Session(bind=engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def drift_world(part: int) -> Any:
    """The module fixture ``scenario`` of the ``part``-th drift file (1-based): one Run per seed of
    SEEDS[part - 1 :: DRIFT_FILES] (with the default seeds, one World per file)."""

    @pytest.fixture(scope="module", params=SEEDS[part - 1 :: DRIFT_FILES], ids=lambda seed: f"seed{seed}")
    def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
        with sim_store(tmp_path_factory, "simulation") as session:
            yield run_scenario(session, int(request.param))

    return scenario


class DriftChecks:
    """The checks on one drifting World; each drift file subclasses this with its ``scenario``."""

    def test_no_drift_no_alert_and_no_promotion_over_60_days(self, scenario: Run) -> None:
        stable = scenario.stable
        assert len(stable.statuses) == NO_DRIFT_DAYS
        alerts = {d: a for d, a in stable.alerts.items() if a}
        assert alerts == {}, alerts
        assert len(stable.retrains) >= 5, "retraining ran too rarely for the no-promotion check to mean much"
        assert stable.promotions == {}, stable.retrains


    def test_drift_alerts_within_14_days_and_not_before(self, scenario: Run) -> None:
        drift = scenario.drift
        before = {d: a for d, a in drift.alerts.items() if a and d < DRIFT_DAY}
        assert before == {}, before
        # The market shift shows in the inputs (and the scores) of the leads of the first week.
        early = {d: a for d, a in drift.alerts.items() if a and DRIFT_DAY <= d <= DRIFT_DAY + 14}
        assert early, {d: (drift.statuses[d], scenario.score_psi.get(d)) for d in drift.statuses if d >= DRIFT_DAY}
        assert all(drift.statuses[d] == "alert" for d in early)


    def test_drift_is_real_for_the_stale_champion(self, scenario: Run) -> None:
        # On the same later leads, the stale champion trails the oracle by clearly more than it did
        # before the drift.
        before = scenario.auc["before_drift"]
        served = scenario.auc["served_after_promotion"]
        before_gap = before["oracle_auc"] - before["model_auc"]
        assert served["oracle_auc"] - served["stale_auc"] > before_gap + 0.005, scenario.auc


    def test_a_challenger_trained_on_post_drift_leads_is_promoted(self, scenario: Run) -> None:
        assert scenario.post_drift_champion is not None, (scenario.promoted, scenario.drift.retrains)
        x, start, end = scenario.promoted[scenario.post_drift_champion]
        assert x >= DRIFT_DAY and end is not None and end > day(DRIFT_DAY), scenario.promoted
        # Learnt from the changed world only: its first training snapshot is of a lead created after
        # the drift began (the monitor's onset is a few days early at most).
        assert start is not None and start >= day(DRIFT_DAY - 7 + 14), scenario.promoted


    def test_auc_on_later_leads_recovers_to_within_003_of_the_oracle(self, scenario: Run) -> None:
        """Leads created after the post-drift promotion, each scored at 14 days by the champion in
        place then: AUC within 0.03 of the oracle's on the same leads, and better than the stale
        champion's."""
        served = scenario.auc["served_after_promotion"]
        assert served["positives"] >= 200, served
        assert served["oracle_auc"] - served["model_auc"] < 0.03, served
        assert served["model_auc"] > served["stale_auc"], served


# ------------------------------------------------------------------- tier A's conversion halves

# A World without drift in which, from HALVING_DAY on, every lead served tier A converts half as
# often (sales stopped following them up: half of the conversions of served-tier-A leads that
# would happen from that day on never happen). Tier A is wide here (score >= 60, B >= 40, C >= 20):
# at this World's volume (about 60 leads a day) that puts ~50 tier-A conversions in the early
# measure's 14 days, and the champion's reference (its test period) ~50 more to set the pace.
HALVING_SEED = 7
HALVING_LEADS = 12000
HALVING_HISTORY_DAYS = 200
HALVING_START = 130  # the champion is trained here; scoring and monitoring run from then on
HALVING_DAY = 170
HALVING_STEP_DAYS = 2
HALVING_POLICY = {"A": 60.0, "B": 40.0, "C": 20.0}


@dataclass
class HalvingRun:
    early: dict[int, dict[str, Any]] = field(default_factory=dict)  # day -> tier_conversion["early"]
    top_tier_alerts: dict[int, list[str]] = field(default_factory=dict)
    dropped: int = 0
    kept_tier_a: int = 0


def halve_tier_a_from(session: Session, feed: StoreFeed, start: datetime, run: HalvingRun
                      ) -> Callable[[list[tuple[datetime, str]]], list[tuple[datetime, str]]]:
    """A conversion filter: from ``start`` on, half of the served-tier-A leads' conversions (chosen
    by a hash of the lead's key: the same lead every run) are dropped."""

    def keep(due: list[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
        late = {feed.ids[key]: key for at, key in due if at >= start and key in feed.ids}
        if not late:
            return due
        served = scores_at_age(session, list(late), 7)
        tier_a = {late[int(i)] for i, tier in zip(served["lead_id"], served["tier"], strict=True) if tier == "A"} \
            if not served.empty else set()
        drop = {key for key in tier_a if zlib.crc32(key.encode()) % 2 == 0}
        run.dropped += len(drop)
        run.kept_tier_a += len(tier_a - drop)
        return [(at, key) for at, key in due if key not in drop]

    return keep


def run_halving(session: Session, seed: int) -> HalvingRun:
    world = World(seed=seed, leads=HALVING_LEADS, history_days=HALVING_HISTORY_DAYS, dq_rate=0.01)
    sink = _Collect()
    world.attach(sink)
    world.generate()
    feed = StoreFeed(session, world, sink)
    run = HalvingRun()
    feed.conversion_filter = halve_tier_a_from(session, feed, day(HALVING_DAY), run)
    feed.sync_to(day(HALVING_START))
    set_policy(session, "score", HALVING_POLICY, created_by="simulation")
    train_from_store(session, as_of=day(HALVING_START), config=TRAINING, families=FAMILIES,
                     catboost_iterations=ITERATIONS)
    session.commit()
    for d in range(HALVING_START + HALVING_STEP_DAYS, HALVING_DAY + 22, HALVING_STEP_DAYS):
        now = day(d)
        feed.sync_to(now)
        score_recent(session, now)
        report = run_monitor(session, as_of=now, config=MONITORING, horizon_days=HORIZON_DAYS)
        run.early[d] = dict(report.metrics["tier_conversion"].get("early") or {})
        run.top_tier_alerts[d] = [a["message"] for a in report.alerts
                                  if a["kind"] == "top_tier_conversion" and a["level"] == "alert"]
        session.commit()
    early = [(d - HALVING_DAY, e.get("status"), e.get("observed"), round(float(e.get("expected", 0.0)), 1))
             for d, e in sorted(run.early.items())]
    alerts = [(d - HALVING_DAY, a) for d, a in sorted(run.top_tier_alerts.items()) if a]
    print(f"seed {seed}: tier A halves at day {HALVING_DAY}: dropped {run.dropped} tier-A conversions "
          f"(kept {run.kept_tier_a}); early measure (day - D, status, observed, expected): {early}; alerts {alerts}")
    return run
