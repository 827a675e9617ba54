"""Live accuracy and calibration on elapsed leads (and conversion by tier on them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from scoring import registry
from scoring.features import (
    load_leads_frame,
)
from scoring.metrics import conversion_by_tier, expected_calibration_error
from scoring.monitoring.clock import trained_at
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, cohort_leads, labels_at
from scoring.monitoring.elapsed import elapsed_scores, live_tier_policy
from scoring.monitoring.reference_cohort import Reference, ensure_reference
from scoring.monitoring.stats import MIN_PERFORMANCE_POSITIVES, Z_ONE_SIDED, auc_standard_error, roc_auc
from scoring.monitoring.status import ALERT, NOT_ENOUGH, WARN, Alert, Findings, worst
from scoring.monitoring.tier_conversion import tier_norms, top_tier_alert
from store.models import (
    ModelVersion,
)

PERFORMANCE_WINDOW_DAYS = 30
SCORE_BANDS: tuple[float, ...] = (0.0, 0.05, 0.10, 0.20, 0.40, 1.0001)
AUC_ACTION = ("the model ranks recent leads worse than when it was trained: run `leadscore retrain --dry-run` "
              "to compare a challenger on the same later leads; promote it if it wins")
CALIBRATION_ACTION = ("scores no longer read as odds: a retrained challenger is calibrated on recent outcomes but "
                      "replaces this champion only if it also ranks leads better (`leadscore retrain --dry-run` "
                      "compares them); until then treat tiers as a ranking, not as probabilities")


def measure_performance(session: Session, champion: ModelVersion, ref: Reference | None, as_of: datetime,
                 horizon_days: int, config: MonitoringConfig, out: Findings) -> None:
    end = as_of - timedelta(days=horizon_days + COHORT_AGE_DAYS)
    start = end - timedelta(days=PERFORMANCE_WINDOW_DAYS)
    perf: dict[str, Any] = {"status": NOT_ENOUGH, "cohort_start": start, "cohort_end": end,
                            "horizon_days": horizon_days, "leads": 0}
    tc: dict[str, Any] = {"status": NOT_ENOUGH, "leads": 0, "cohort_start": start, "cohort_end": end,
                          "horizon_days": horizon_days}
    out.metrics["performance"] = perf
    out.metrics["tier_conversion"] = tc
    ids = cohort_leads(session, start, end)
    policy = live_tier_policy(session)  # capacity: today's score cut-offs, as live scoring tiers
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
    known, label = labels_at(leads, scores["scored_at"], horizon_days, as_of)
    y = label[known]
    p = scores["probability"].to_numpy(dtype="float64")[known]
    tiers = scores["tier"].to_numpy(dtype=object)[known]
    perf["rows"] = perf["leads"] = tc["leads"] = int(known.sum())
    perf["positives"] = tc["converted"] = int(y.sum())
    if perf["rows"] == 0:
        perf["reason"] = tc["reason"] = "no scored lead's outcome is known yet"
        out.notes.append("live performance not measured: no matured scores")
        return
    versions = scores["model_version_id"].to_numpy()[known]
    ids_used, used_counts = np.unique(versions[~pd.isna(versions)].astype("int64"), return_counts=True)
    maker = session.get(ModelVersion, int(ids_used[np.argmax(used_counts)])) if len(ids_used) else None
    # Scores of a model no longer in production say nothing about the champion: right after a
    # promotion the elapsed leads are the previous model's, and nothing the new one scored has
    # elapsed yet. Shown, not judged.
    not_yet = _not_live_yet(champion, maker, len(y), horizon_days)
    if not_yet:
        perf["reason"] = not_yet
        out.notes.append(f"live accuracy and tier conversion not judged: {not_yet}")
    counted = conversion_by_tier(y, tiers)
    by_tier: dict[str, dict[str, Any]] = {tier: dict(row) for tier, row in counted.items()}
    norms = tier_norms(session, ref, policy)
    for tier, row in by_tier.items():
        row["norm"] = (norms.get(tier) or {}).get("conversion_rate")
        row["norm_leads"] = (norms.get(tier) or {}).get("leads")  # what the norm was measured on
    tc["by_tier"] = by_tier
    tc["norms"] = norms
    tc["policy"] = {"mode": policy.mode, "thresholds": dict(policy.thresholds)}
    status, alert, detail = top_tier_alert(by_tier, norms, share=config.top_tier_share)
    if not_yet:
        status, alert, detail = NOT_ENOUGH, None, {**detail, "reason": not_yet}
    tc["top_tier"] = detail
    tc["status"] = status
    if status == NOT_ENOUGH and not not_yet:
        out.notes.append(f"top-tier conversion not judged: {detail.get('reason')}")
    if alert is not None:
        out.alerts.append(alert)
    perf["conversion_rate"] = float(y.mean())
    perf["mean_predicted"] = float(p.mean())
    perf["conversion_by_tier"] = counted
    perf["ece"] = expected_calibration_error(y, p)
    perf["calibration"] = calibration_by_band(y, p)
    perf["lift_by_decile"] = _lift(y, p)
    perf["served"], perf["reconstructed"] = counts.get("served", 0), counts.get("reconstructed", 0)
    perf["model_versions"] = {int(i): int(c) for i, c in zip(ids_used, used_counts, strict=True)}
    # Segment models (and earlier champions) are judged on the leads they scored, one by one.
    by_model: dict[str, Any] = {}
    for mv_id in ids_used:
        mask = versions == mv_id
        mv = session.get(ModelVersion, int(mv_id))
        name = mv.version if mv is not None else str(mv_id)
        pos = int(y[mask].sum())
        by_model[name] = {"segment": mv.segment if mv is not None else None, "leads": int(mask.sum()),
                          "converted": pos, "auc": roc_auc(y[mask], p[mask])
                          if min(pos, int(mask.sum()) - pos) >= MIN_PERFORMANCE_POSITIVES else None}
    perf["by_model"] = by_model
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    auc = roc_auc(y, p)
    perf["auc"] = auc
    if ref is not None and ref.outcomes:
        perf["reference_ece"] = expected_calibration_error([o[1] for o in ref.outcomes], [o[0] for o in ref.outcomes])
    if not_yet:
        perf["ece_increase"] = float(perf["ece"]) - float(perf.get("reference_ece") or 0.0)
        perf["status"] = NOT_ENOUGH
        return
    before = len(out.alerts)
    _calibration(y, p, perf, config, out, ref)
    if positives < MIN_PERFORMANCE_POSITIVES or negatives < MIN_PERFORMANCE_POSITIVES:
        perf["reason"] = (f"{positives} conversion{'s' if positives != 1 else ''} among {len(y)} elapsed leads; "
                          f"at least {MIN_PERFORMANCE_POSITIVES} of each class needed to judge the AUC")
        out.notes.append(f"live AUC not judged: {perf['reason']}")
        _status(perf, out.alerts[before:])
        return
    se = auc_standard_error(auc, positives, negatives)
    perf["auc_se"] = se
    maker_ref = ensure_reference(session, maker, as_of=as_of) if maker is not None else None
    baseline = maker_ref.baseline_auc if maker_ref is not None else None
    if baseline is None and maker is not None:
        baseline = registry.recorded_test_auc(maker)
    perf["baseline_auc"] = baseline
    if baseline is None or not math.isfinite(auc):
        _status(perf, out.alerts[before:])
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
            # The margin the test uses (one-sided 99 %), not one standard error: a trial read "0.085
            # below baseline, within sampling noise (±0.068)" as a contradiction.
            out.alerts.append(Alert(WARN, "auc_drop", f"live AUC {auc:.3f} is {drop:.3f} below baseline "
                                    f"{baseline:.3f}, within sampling noise (a drop up to {Z_ONE_SIDED * se:.3f} "
                                    f"is chance at 99% on {len(y)} elapsed leads)", drop,
                                    config.auc_drop_alert, action=AUC_ACTION))
    _status(perf, out.alerts[before:])


def _status(perf: dict[str, Any], alerts: Sequence[Alert]) -> None:
    """The section's status and the checks that set it (``status_from``: "calibration",
    "auc_drop"), so a warning is never read as being about the AUC line it heads. With the AUC not
    judged and no alert: not enough data."""
    perf["status"] = worst(alerts) if alerts or "auc_se" in perf else NOT_ENOUGH
    # The checks at that level only: "alert (auc_drop, calibration)" read as both alerting when the
    # AUC's drop only warned (a trial).
    perf["status_from"] = sorted({a.kind for a in alerts if a.level == perf["status"]})


def _not_live_yet(champion: ModelVersion, maker: ModelVersion | None, leads: int, horizon_days: int) -> str:
    """Why elapsed leads cannot judge the models in production ("" when they can): most of them were
    scored by a version that is no longer a champion (global or segment)."""
    if maker is None or maker.status == registry.CHAMPION:
        return ""
    known_from = trained_at(champion) + timedelta(days=COHORT_AGE_DAYS + horizon_days)
    return (f"most of these {leads} elapsed leads were scored by {maker.version}, no longer in production; the "
            f"champion {champion.version} has no elapsed leads of its own yet (its first are known around "
            f"{known_from:%Y-%m-%d})")


def _calibration(y: np.ndarray, p: np.ndarray, perf: dict[str, Any], config: MonitoringConfig,
                 out: Findings, ref: Reference | None) -> None:
    ece = float(perf.get("ece") or 0.0)
    base = float(perf.get("reference_ece") or 0.0)
    perf["ece_increase"] = ece - base
    reference = None
    if ref is not None and ref.outcomes:
        reference = (np.asarray([o[1] for o in ref.outcomes], dtype="float64"),
                     np.asarray([o[0] for o in ref.outcomes], dtype="float64"))
    alert = calibration_alert(y, p, ece=ece, reference_ece=base, config=config, reference=reference)
    if alert is not None:
        out.alerts.append(alert)
        return
    observed, predicted = float(y.mean()), float(p.mean())
    if reference is not None and _mean_off(observed, predicted, len(y)):
        # Off from the predictions, but as on the reference leads: a known trait of this model at
        # this age, not a change a retrain would fix. Said with what was to be expected, so a gap
        # of 12 % vs 2 % next to the reference's 8 % vs 4 % reads as the noise it is.
        out.notes.append(reference_gap_note(observed, predicted, len(y), reference))


def reference_gap_note(observed: float, predicted: float, rows: int,
                       reference: tuple[np.ndarray, np.ndarray]) -> str:
    """The note for a conversion rate off the predictions the way the champion's reference leads
    were at the same age (``reference``: their outcomes and predictions): what the reference
    showed, the rate that makes expected here, and why the rest is noise."""
    ref_observed, ref_predicted = float(reference[0].mean()), float(reference[1].mean())
    expected = _expected_rate(predicted, reference)
    conversions = int(reference[0].sum())
    more = observed > predicted
    return (f"{'more' if more else 'fewer'} leads converted than predicted ({observed:.1%} of {rows} elapsed "
            f"leads vs {predicted:.1%} predicted), as the champion's reference leads did at the same age "
            f"({ref_observed:.1%} vs {ref_predicted:.1%}): about {expected:.1%} was to be expected, and "
            f"{observed:.1%} is within the error of {conversions} reference conversion"
            f"{'' if conversions == 1 else 's'}. The likelihood field reads {'low' if more else 'high'} for "
            "leads this young, a trait of this model; a retrain would not change it")


def _expected_rate(predicted: float, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """The conversion rate a mean prediction makes expected, off it as far as the reference leads'
    observed rate was off theirs (``reference``: their outcomes and predictions)."""
    ref_predicted = float(reference[1].mean()) if len(reference[1]) else 0.0
    if ref_predicted <= 0:
        return predicted
    return min(predicted * float(reference[0].mean()) / ref_predicted, 1.0)


def _mean_off(observed: float, expected: float, rows: int, extra_se: float = 0.0) -> bool:
    """The observed rate is 3 standard errors and 25 % away from the expected one."""
    se = math.sqrt(max(expected * (1 - expected), 1e-9) / rows + extra_se**2)
    return abs(observed - expected) > 3 * se and abs(observed - expected) > 0.25 * max(expected, 1e-9)


def calibration_alert(y: np.ndarray, p: np.ndarray, *, ece: float, reference_ece: float,
                      config: MonitoringConfig, reference: tuple[np.ndarray, np.ndarray] | None = None,
                      ) -> Alert | None:
    """Calibration drift: the ECE grew by more than ``ece_alert`` over the champion's own reference
    ECE (leads of its test period seen at the same age) *and* the mean prediction is far from the
    observed rate (3 standard errors and 25 %): alert; either alone warns. A mean that moved while
    the ECE is no worse than the reference's is a shift of the rate, not "miscalibrated".

    ``reference`` (its outcomes and predictions): the observed rate is expected off the mean
    prediction as far as on the reference leads (same model, same age: a model trained on older
    snapshots predicts young leads low), so "off" is measured against that, with the reference's
    own sampling error added."""
    observed, predicted = float(y.mean()), float(p.mean())
    expected, extra_se, against = predicted, 0.0, ""
    if reference is not None and len(reference[0]) and float(reference[1].mean()) > 0:
        ref_observed, ref_predicted = float(reference[0].mean()), float(reference[1].mean())
        expected = _expected_rate(predicted, reference)
        extra_se = expected / math.sqrt(max(float(reference[0].sum()), 1.0))  # the reference's Poisson error
        against = f" (the reference leads: {ref_observed:.1%} vs {ref_predicted:.1%})"
    mean_off = _mean_off(observed, expected, len(y), extra_se)
    grew = ece - reference_ece
    ece_high = grew > config.ece_alert
    moved = (f"ECE {ece:.3f} vs {reference_ece:.3f} on the reference leads ({grew:+.3f}; alert line "
             f"+{config.ece_alert:g})")
    if mean_off and ece_high:
        return Alert(ALERT, "calibration", f"scores are miscalibrated: {observed:.1%} converted vs "
                     f"{predicted:.1%} predicted{against}; {moved}", grew, config.ece_alert, action=CALIBRATION_ACTION)
    if mean_off:
        # What a reader acts on first: which way the likelihoods are off; then whether the
        # scores' calibration across bands got worse (it did not when the ECE is no worse).
        more = observed > predicted
        how = ("the gap across score bands is no larger than on the reference leads: the conversion rate "
               "shifted as a whole" if grew <= 0 else
               "the gap across score bands grew, within the alert line")
        return Alert(WARN, "calibration", f"{'more' if more else 'fewer'} leads converted than predicted: "
                     f"{observed:.1%} vs {predicted:.1%} on {len(y)} elapsed leads{against}, so the likelihood "
                     f"field reads {'low' if more else 'high'}; {moved}: {how}", observed - predicted, None,
                     action=CALIBRATION_ACTION)
    if ece_high:
        return Alert(WARN, "calibration", f"calibration drifted: {moved}, {len(y)} elapsed leads", grew,
                     config.ece_alert, action=CALIBRATION_ACTION)
    return None


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
