"""The scoring service's entry points in one place; each stage lives in its own module.

- :mod:`scoring.train_runs`: training runs from the store (``train_from_store``);
- :mod:`scoring.inputs`: the data's clock, which leads a run scores, their features from the store;
- :mod:`scoring.champions`: the champion models, predictions, score references, live typical values;
- :mod:`scoring.score_run`: a scoring run, end to end (``score_leads``), or planned once
  (``plan_scoring``) and scored in chunks that workers may take in parallel (``score_chunk``);
- :mod:`scoring.score_writes`: score rows, outbox rows and tier-change hooks (``write_scores``);
- :mod:`scoring.explain`: one lead's score explained (``leadscore explain``).

The CLI, Celery tasks and the web console import these names from here (or from the stage
module); nothing in those modules imports this one.
"""

from __future__ import annotations

from scoring.champions import NoChampionError, ensure_score_reference, live_typical
from scoring.explain import explain_lead, find_lead
from scoring.inputs import crm_now, lead_features, live_lead_ids, next_aging, stale_lead_ids
from scoring.score_run import Progress, ScoreSummary, ScoringPlan, plan_scoring, score_chunk, score_leads
from scoring.score_writes import OUTBOX_KIND, NewScore, WriteStats, outbox_payload, payload_hash, write_scores
from scoring.train_runs import TrainOutcome, train_from_store

__all__ = [
    "OUTBOX_KIND",
    "NewScore",
    "NoChampionError",
    "Progress",
    "ScoreSummary",
    "ScoringPlan",
    "TrainOutcome",
    "WriteStats",
    "crm_now",
    "ensure_score_reference",
    "explain_lead",
    "find_lead",
    "lead_features",
    "live_lead_ids",
    "live_typical",
    "next_aging",
    "outbox_payload",
    "payload_hash",
    "plan_scoring",
    "score_chunk",
    "score_leads",
    "stale_lead_ids",
    "train_from_store",
    "write_scores",
]
