"""The monitor's findings in words: one line per measure, as the CLI, the demo's summary and the
console show them (one wording everywhere)."""

from __future__ import annotations

from typing import Any

from scoring.monitoring.shadow_compare import describe_shadow
from scoring.monitoring.status import NOT_ENOUGH


def count_alerts(alerts: list[dict[str, Any]]) -> str:
    """A run's alerts by level, as the CLI and the console both say it: "2 warnings", "1 alert,
    1 warning", "0 alerts"."""
    alert = sum(1 for a in alerts if a.get("level") == "alert")
    warn = len(alerts) - alert
    parts = [f"{alert} alert{'s' if alert != 1 else ''}"] if alert or not warn else []
    if warn:
        parts.append(f"{warn} warning{'s' if warn != 1 else ''}")
    return ", ".join(parts)


def _feature_lines(drift: dict[str, Any]) -> str:
    """"0 features above the alert line (PSI 0.25), 1 above the warning line (0.1)"."""
    alert, warn = drift.get("features_above_alert", 0), drift.get("features_above_warning")
    text = f"{alert} feature{'s' if alert != 1 else ''} above the alert line"
    if "psi_alert" in drift:
        text += f" (PSI {drift['psi_alert']:g})"
    if warn is not None:
        text += f", {warn} above the warning line" + (f" ({drift['psi_warn']:g})" if "psi_warn" in drift else "")
    if drift.get("within_noise"):  # above psi_warn, but not above what this many leads give by chance
        text += f", {drift['within_noise']} within the sampling noise"
    return text


def remeasured_line(metrics: dict[str, Any], *, webhook: bool) -> str | None:
    """The line a rerun at the same data clock prints: it replaced that clock's report."""
    again = metrics.get("remeasured")
    if not again:
        return None
    return (f"measured again at the same data clock: this replaces its report (first written "
            f"{str(again.get('first_written_at', ''))[:16].replace('T', ' ')} UTC; run {again.get('runs')} at this "
            "clock)" + ("; the webhook is sent again only when the alerts changed" if webhook else ""))


def describe_report(metrics: dict[str, Any], alerts: list[dict[str, Any]]) -> list[str]:
    """A monitor report in words, as ``leadscore monitor``, ``leadscore report`` and the demo print
    it: one line per measure, the run's notes that no measure line already says, then each alert
    with what to do about it (indented under it)."""
    lines = describe_measures(metrics)
    lines += [f"note: {note}" for note in unsaid_notes(metrics, lines)]
    for alert in alerts:
        lines.append(f"{alert.get('level')}: {alert.get('message')}")
        if alert.get("action"):
            lines.append(f"  what to do: {alert['action']}")
    return lines


def unsaid_notes(metrics: dict[str, Any], said: list[str]) -> list[str]:
    """The run's notes, less those whose reason (the text after "not judged: ", "not measured: "
    and the like) a measure line already gives."""
    out: list[str] = []
    for note in metrics.get("notes") or []:
        if note in said:  # a shadow challenger's line is both a note and a measure line
            continue
        head, sep, reason = str(note).partition(": ")
        if sep and head.endswith(("not judged", "not measured")) and any(reason in line for line in said):
            continue
        out.append(str(note))
    return out


def describe_measures(metrics: dict[str, Any]) -> list[str]:
    """One line per measure: its status and what it was measured on (or why it was not)."""
    return [line for lines in describe_by_measure(metrics).values() for line in lines]


def describe_by_measure(metrics: dict[str, Any]) -> dict[str, list[str]]:
    """:func:`describe_measures`' lines by the measure they describe (the ``measures`` keys:
    drift, tier_conversion, performance, shadow, freshness), for the console's table."""
    by: dict[str, list[str]] = {}
    drift = metrics.get("drift") or {}
    lines = by.setdefault("drift", [])
    if drift:
        if drift.get("status") == NOT_ENOUGH or drift.get("score_psi") is None:
            lines.append(f"drift: not enough data ({drift.get('reason', 'not measured')})")
        else:
            lines.append(f"drift: {drift['status']} on {drift.get('leads', 0):,} leads created "
                         f"{str(drift.get('cohort_start'))[:10]}..{str(drift.get('cohort_end'))[:10]} "
                         f"(score PSI {drift['score_psi']:.3f}, {_feature_lines(drift)})")
    tc = metrics.get("tier_conversion") or {}
    lines = by.setdefault("tier_conversion", [])
    if tc:
        top = tc.get("top_tier") or {}
        if not tc.get("leads"):
            lines.append(f"tier conversion: not enough data ({tc.get('reason', 'no elapsed leads')})")
        else:
            tiers = ", ".join(f"{t} {row['conversion_rate']:.1%} of {row['leads']:,}" + _norm(row)
                              for t, row in sorted((tc.get("by_tier") or {}).items()))
            verdict = tc["status"] if tc["status"] != NOT_ENOUGH else f"not judged ({top.get('reason', '')})"
            lines.append(f"tier conversion: {verdict} on {tc['leads']:,} elapsed leads ({tc.get('served', 0):,} "
                         f"served scores, {tc.get('reconstructed', 0):,} reconstructed): {tiers}")
            # As the tier preview says it: a trial read "D 7.1% of 14" above "C 3.6% of 83" (one
            # conversion) as D converting better than C.
            from scoring.tier_changes import few_conversions_caution

            counted = {t: {"leads": int(row.get("leads") or 0), "converted": row["converted"] if "converted" in row
                           else round(float(row.get("conversion_rate") or 0) * int(row.get("leads") or 0))}
                       for t, row in (tc.get("by_tier") or {}).items()}  # (reports that kept rates only)
            if caution := few_conversions_caution(counted, "conversion of elapsed leads"):
                lines.append(f"tier conversion caution: {caution}")
        early = tc.get("early") or {}
        if early:
            lines.append(describe_early(early))
    perf = metrics.get("performance") or {}
    lines = by.setdefault("performance", [])
    if perf:
        auc = perf.get("auc")
        if perf.get("leads") and auc is not None and perf.get("status") == NOT_ENOUGH and perf.get("reason"):
            # Why it is not judged first: an AUC on 1 conversion read first looks like a result.
            lines.append(f"accuracy: not enough data ({perf['reason']}); not judged yet: AUC {auc:.3f}"
                         + (f", ECE {perf['ece']:.3f}" if perf.get("ece") is not None else "")
                         + f" on {perf['leads']:,} elapsed leads")
        elif perf.get("leads") and auc is not None:
            base = perf.get("baseline_auc")
            # Which checks set the status: a calibration warning is not about the AUC it heads.
            source = ", ".join(perf.get("status_from") or [])
            lines.append(f"accuracy: {perf.get('status')}" + (f" ({source})" if source else "")
                         + f" — AUC {auc:.3f} on {perf['leads']:,} elapsed leads"
                         + (f" (baseline {base:.3f})" if base is not None else "")
                         + (f", ECE {perf['ece']:.3f}" if perf.get("ece") is not None else "")
                         + (f"; {perf['reason']}" if perf.get("reason") else ""))
        else:
            lines.append(f"accuracy: not enough data ({perf.get('reason', 'no elapsed leads')})")
    by["shadow"] = [describe_shadow(c) for c in metrics.get("shadow") or []]
    fresh = metrics.get("freshness") or {}
    lines = by.setdefault("freshness", [])
    if fresh:
        ages = ", ".join(f"{name} {row['age_hours']:.1f} h" if row.get("age_hours") is not None
                         else f"{name} not measured ({row.get('reason') or 'first sync after the as-of'})"
                         if row.get("first_success")
                         else f"{name} never" for name, row in fresh.items())
        lines.append(f"freshness (since the last successful sync, CRM clock): {ages}")
    else:
        lines.append("freshness: no connection configured or synced")
    return {name: found for name, found in by.items() if found}


def _norm(row: dict[str, Any]) -> str:
    """`` (norm 12.5% of 48)``: the reference's rate for the tier and how many leads it is on (a
    norm of 0.0 % on 3 leads is noise, not an expectation)."""
    if row.get("norm") is None:
        return ""
    base = f" of {row['norm_leads']:,}" if row.get("norm_leads") is not None else ""
    return f" (norm {row['norm']:.1%}{base})"


def describe_early(early: dict[str, Any]) -> str:
    """One line for the early top-tier measure (``tier_conversion["early"]``)."""
    top, window = early.get("tier", "A"), early.get("window_days")
    if early.get("status") == "not enough data" or early.get("ratio") is None:
        return f"tier {top} conversions, last {window} days: not enough data ({early.get('reason', '')})"
    return (f"tier {top} conversions, last {window} days: {early['status']} — {early['observed']} conversions among "
            f"{early['leads']:,} tier-{top} leads at risk, {early['expected']:.1f} expected at the reference's pace "
            f"({early['ratio']:.2f}x)")
