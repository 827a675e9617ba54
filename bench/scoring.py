"""Benchmark scoring: training time, end-to-end scoring rate and CatBoost's raw predict+SHAP rate.

Usage: ``.venv/bin/python bench/scoring.py [--leads 12000] [--seed 0] [--database-url URL ...]``.
A crmsim ``World`` of ``--leads`` leads is loaded straight into a fresh store (SQLite in a
temporary directory unless ``--database-url`` names an empty database; PostgreSQL's lead and
activity tables are then analyzed, as a sync of that size leaves them), then:

``--database-url sqlite --database-url postgresql+psycopg://...`` measures both databases in one
run: one world, loaded and trained into each store, then each store scored and timed one after the
other, with the world released (``{"runs": [sqlite result, postgresql result]}``).

1. ``train_from_store`` as ``leadscore train`` runs it (three families, default grids): training
   seconds, examples and the chosen family;
2. ``score_leads(all=True)`` in a session of its own, as ``leadscore score --all`` runs after
   ``leadscore train`` (the world and the training objects released first): every live lead end
   to end (features read from the database, prediction, SHAP reasons, LeadScore and outbox
   writes): leads per second;
3. on the same leads and the same feature frames (built by the service's own batch reader, not
   timed), the champion's CatBoost model loaded with ``scoring.registry.load_model``: the calls
   the run makes (its first batch alone, then consecutive batches gathered into calls of
   ``scoring.score_run.SHAP_ROWS`` rows, each encoded once, predicted, then CatBoost's own exact
   SHAP, ``get_feature_importance``), rows per second; ``shap_seconds_by_leaf``: the same rows'
   SHAP values as the run computes them (:mod:`scoring.leaf_shap`, CatBoost's values by leaf);
   ``shap_seconds_one_call_per_batch`` times SHAP one call per batch, as runs before the calls
   were gathered made it;
4. ``end_to_end_over_raw``: (2) over (3), the share of the model's own speed that scoring keeps
   (issue #17: >= 0.5 on SQLite and on PostgreSQL); ``end_to_end_over_raw_by_leaf``: the same with
   SHAP by leaf as the raw pass (the run's own work against the model work it does).
   ``load_average`` is the machine's 1-minute load when scoring started: on a shared machine, a
   high load makes every rate pessimistic.
   ``cpu_seconds``: the CPU time of this process during (2), all threads; ``server_cpu_seconds``:
   that of the PostgreSQL server process serving it, when the server runs on this machine;
   ``batches_done_at``: per stage of the run's progress reports ("scoring": a batch read, its
   features built and predicted; "writing": a batch explained and written), the seconds from the
   start at which each batch was done: a capacity run reads every batch before it writes one;
5. with ``--raw-sizes 1000 2000 ...``: raw predict + SHAP of the same leads in calls of each size
   (best of three), ``raw_seconds_by_batch_size``: CatBoost's SHAP costs a fixed part per call.

Prints one JSON object. Building a 100,000-lead world takes minutes; that is part of the bench.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as ``python bench/scoring.py``, this file's directory comes first on sys.path and its name
# would shadow the scoring package; drop it (``python -m bench.scoring`` needs no such help).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # tests.factories loads a World into the store without HTTP

import pandas as pd  # noqa: E402
from sqlalchemy import Engine, inspect, make_url, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from config.app_config import TierConfig, TrainingConfig  # noqa: E402
from connectors.sync import analyze_synced_tables  # noqa: E402
from scoring import registry  # noqa: E402
from scoring.model import PreparedRows  # noqa: E402
from scoring.score_run import BATCH_SIZE, SHAP_ROWS, starts_call  # noqa: E402
from scoring.service import lead_features, live_lead_ids, score_leads, train_from_store  # noqa: E402
from scoring.training import TrainedModel  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.models import Base, Lead, ModelVersion  # noqa: E402
from tests.factories import generate_world, load_world  # noqa: E402

BATCH = BATCH_SIZE  # score_leads' default batch size


def _catboost_model(session: Session) -> tuple[TrainedModel, str]:
    """The champion when it is CatBoost, else the newest CatBoost version (and which it was)."""
    mv = registry.champion(session)
    if mv is not None:
        model = registry.load_model(mv)
        if model.family == "catboost":
            return model, "champion"
    newest = session.scalars(select(ModelVersion).where(ModelVersion.family == "catboost")
                             .order_by(ModelVersion.id.desc()).limit(1)).first()
    if newest is None:
        raise SystemExit("no CatBoost model was trained: nothing to compare with")
    return registry.load_model(newest), "candidate"


def run(train_leads: int, seed: int, database_urls: Sequence[str | None], batch: int = BATCH,
        raw_sizes: list[int] | None = None) -> dict[str, Any]:
    """Build one world; load and train a store per database (None: SQLite in a temporary
    directory); then, the world released, score and time each store in turn. One database: its
    result; several: ``{"runs": [...]}``, one result each, measured one after the other."""
    for database_url in database_urls:
        if database_url:
            _refuse_used(database_url)
    started = time.perf_counter()
    world, sink = generate_world(seed=seed, leads=train_leads)
    world_seconds = round(time.perf_counter() - started, 2)
    as_of = world.now
    with ExitStack() as stack:
        stores: list[tuple[Engine, dict[str, Any]]] = []
        for database_url in database_urls:
            url = database_url or f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'bench.db'}"
            engine = make_engine(url)
            stack.callback(engine.dispose)
            out: dict[str, Any] = {"train_leads": train_leads, "seed": seed, "batch_size": batch,
                                   "world_seconds": world_seconds, "database": url.split(":", 1)[0]}
            Base.metadata.create_all(engine)
            with Session(engine, expire_on_commit=False) as session:
                started = time.perf_counter()
                load_world(session, sink)
                session.commit()
                # The planner statistics a sync of this many records leaves behind (PostgreSQL).
                analyze_synced_tables(engine)
                out["load_seconds"] = round(time.perf_counter() - started, 2)
                started = time.perf_counter()
                trained = train_from_store(session, as_of=as_of, config=TrainingConfig(min_per_class=100))
                session.commit()
                out["training"] = {
                    "seconds": round(time.perf_counter() - started, 2), "examples": trained.examples,
                    "positives": trained.positives, "selected": trained.result.selected,
                    "test_auc": {f: round(m["test"]["auc"], 4) for f, m in trained.result.metrics.items()},
                }
                del trained
            stores.append((engine, out))
        # Score as `leadscore score --all` does after `leadscore train`: a session of its own,
        # without the world and the training objects this process built (they only slow the
        # collector down).
        del world, sink
        gc.collect()
        results = [_score(engine, out, as_of, batch, raw_sizes) for engine, out in stores]
    return results[0] if len(results) == 1 else {"runs": results}


def _refuse_used(url: str) -> None:
    """One line, before any work, for a database that already holds leads (the bench loads a world
    of its own: a second load would collide with the first)."""
    engine = make_engine(url)
    try:
        if inspect(engine).has_table(Lead.__tablename__):
            with Session(engine) as probe:
                if probe.scalars(select(Lead.id).limit(1)).first() is not None:
                    raise SystemExit(f"bench/scoring.py: {make_url(url).render_as_string(hide_password=True)} "
                                     "already holds leads: give an empty database")
    finally:
        engine.dispose()


def _score(engine: Engine, out: dict[str, Any], as_of: datetime, batch: int,
           raw_sizes: list[int] | None) -> dict[str, Any]:
    """End-to-end scoring of every live lead, then raw predict + SHAP of the same batches."""
    with Session(engine, expire_on_commit=False) as session:
        out["load_average"] = round(os.getloadavg()[0], 2)
        server = _server_process(session)
        server_cpu = _process_cpu(server)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        reports: dict[str, list[float]] = {}
        started = time.perf_counter()

        def progress(stage: str, _done: int, _total: int) -> None:
            reports.setdefault(stage, []).append(round(time.perf_counter() - started, 3))

        summary = score_leads(session, as_of=as_of, all=True, batch_size=batch, progress=progress,
                              tier_default=TierConfig(mode="capacity", thresholds={"A": 5, "B": 15, "C": 30}))
        session.commit()
        seconds = time.perf_counter() - started
        used = resource.getrusage(resource.RUSAGE_SELF)
        server_used = _process_cpu(server)
        out["score_end_to_end"] = {
            "leads": summary.scored, "seconds": round(seconds, 2),
            "leads_per_second": round(summary.scored / seconds, 1), "outbox_rows": summary.outbox_rows,
            # CPU seconds of this process (all its threads) and, for a PostgreSQL server on this
            # machine, of the session's server process (None where /proc does not show it).
            "cpu_seconds": round(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, 2),
            "server_cpu_seconds": (round(server_used - server_cpu, 2)
                                   if server_cpu is not None and server_used is not None else None),
            # Seconds from the start at which each batch was read ("scoring") and written
            # ("writing"), from the run's own progress reports: where the time goes.
            "batches_done_at": reports,
        }

        model, source = _catboost_model(session)
        ids = live_lead_ids(session)
        frames = [lead_features(session, ids[start : start + batch], as_of)[1] for start in range(0, len(ids), batch)]
        # The run gathers SHAP_ROWS rows of consecutive batches into a call, encodes them once,
        # predicts them and computes their SHAP values (scoring.score_run): the raw pass makes the
        # same calls, on frames gathered before timing (the run's own gathering is part of its time).
        calls = _gathered(frames, SHAP_ROWS)
        rows = sum(len(f) for f in frames)
        prepared: list[PreparedRows] = []
        predict_s = _timed(lambda: prepared.extend(_encoded_and_predicted(model, calls)))
        estimator = model.estimator
        shap_s = _timed(lambda: [estimator.catboost_contributions(call.encoded) for call in prepared])
        raw_rate = rows / (predict_s + shap_s) if rows else 0.0
        # The same rows' SHAP values as the run computes them (scoring.leaf_shap: CatBoost's values
        # looked up by leaf; tables the run filled are in this process's model).
        by_leaf_s = _timed(lambda: [call.contributions() for call in prepared])
        out["catboost_raw"] = {
            "model": source, "rows": rows, "predict_seconds": round(predict_s, 3),
            "shap_seconds": round(shap_s, 3), "shap_calls": len(calls), "rows_per_second": round(raw_rate, 1),
            "shap_seconds_by_leaf": round(by_leaf_s, 3),
        }
        # For comparison with runs before SHAP calls gathered batches: one SHAP call per batch.
        out["catboost_raw"]["shap_seconds_one_call_per_batch"] = round(
            _timed(lambda: [estimator.catboost_contributions(model.prepare(f).encoded) for f in frames]), 3)
        # The measure: end-to-end leads/s over raw predict + CatBoost's SHAP rows/s on the
        # same rows (goal >= 0.5). None, not a ratio, when nothing was scored. And the same over
        # predict + SHAP by leaf: the share of the model's time the run's own work leaves.
        e2e_rate = summary.scored / seconds if summary.scored else 0.0
        out["end_to_end_over_raw"] = round(e2e_rate / raw_rate, 3) if rows and summary.scored else None
        by_leaf_rate = rows / (predict_s + by_leaf_s) if rows else 0.0
        out["end_to_end_over_raw_by_leaf"] = round(e2e_rate / by_leaf_rate, 3) if rows and summary.scored else None
        if raw_sizes:
            out["raw_seconds_by_batch_size"] = _raw_by_size(session, model, ids, as_of, raw_sizes)
    out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def _server_process(session: Session) -> int | None:
    """The PostgreSQL server process of the session's connection (None on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.execute(text("select pg_backend_pid()")).scalar_one())


def _process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a process from /proc (None when it is not on this machine)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _encoded_and_predicted(model: TrainedModel, calls: Sequence[pd.DataFrame]) -> list[PreparedRows]:
    """Each call's rows encoded once and predicted, as a run does before their SHAP."""
    out: list[PreparedRows] = []
    for call in calls:
        rows = model.prepare(call)
        rows.proba()
        out.append(rows)
    return out


def _gathered(frames: Sequence[pd.DataFrame], rows: int) -> list[pd.DataFrame]:
    """Consecutive frames joined into calls as a scoring run gathers its batches' SHAP calls
    (:func:`scoring.score_run.starts_call`: the first batch alone, then at least ``rows`` rows;
    the last call with what is left)."""
    calls: list[pd.DataFrame] = []
    pending: list[pd.DataFrame] = []
    for frame in frames:
        pending.append(frame)
        if starts_call(sum(len(f) for f in pending), len(calls), rows):
            calls.append(pd.concat(pending))
            pending = []
    if pending:
        calls.append(pd.concat(pending))
    return calls


def _raw_by_size(
    session: Session, model: TrainedModel, ids: list[int], as_of: datetime, sizes: list[int]
) -> dict[str, float]:
    """Raw predict + SHAP of the same leads in calls of each size (best of three): CatBoost's SHAP
    precomputes every leaf's values once per call, so fewer, larger calls cost less."""
    frames = {size: [lead_features(session, ids[i : i + size], as_of)[1] for i in range(0, len(ids), size)]
              for size in sizes}
    out: dict[str, float] = {}
    for size in sizes:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for frame in frames[size]:
                rows = model.prepare(frame)
                rows.proba()
                model.estimator.catboost_contributions(rows.encoded)
            best = min(best, time.perf_counter() - started)
        out[str(size)] = round(best, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-leads", "--leads", type=int, default=12_000, help="leads in the simulated CRM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", action="append", default=None,
                        help="an empty database; repeat it to measure several in one run ('sqlite': SQLite in a "
                             "temporary directory, the default)")
    parser.add_argument("--batch-size", type=int, default=BATCH,
                        help="leads per batch, end to end and raw alike (CatBoost's SHAP costs a fixed part per call)")
    parser.add_argument("--raw-sizes", type=int, nargs="*", default=[],
                        help="also time raw predict + SHAP of the same leads in calls of these sizes")
    args = parser.parse_args()
    urls = [None if url == "sqlite" else url for url in (args.database_url or ["sqlite"])]
    print(json.dumps(run(args.train_leads, args.seed, urls, args.batch_size, args.raw_sizes), indent=2))


if __name__ == "__main__":
    main()
