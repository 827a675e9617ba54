"""The model card as ``leadscore models show`` prints it: the card stored at registration
(:func:`scoring.card_render.render_model_card`) plus what the monitor learnt about the model on its
reference leads: feature importance with the concept names reps see, precision/recall at the tier
cut-offs, lift by decile, and the promotion decision."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scoring.card_render import _num, render_model_card

# What reps read for each concept (the wording of scoring.reasons.render), the window aside.
_REP_WORDS = {
    "high_intent": "pricing/demo page visits", "content": "content pieces engaged with",
    "persona": "job title (seniority, department)", "engagement_30d": "engagements",
    "engagement_velocity": "engagement rising or falling (30 days vs the 30 before)",
    "days_since_last_engagement": "days since last engaged", "committee_size": "colleagues who became leads",
    "employee_band": "company size", "revenue_band": "annual revenue", "country": "country",
    "lead_source": "lead source", "campaign": "campaign", "industry": "industry",
    "email_type": "e-mail address type", "missing_fields": "key fields missing on the record",
    "junk_flags": "signs of test or junk data", "lead_age_days": "days since the lead was created",
}
_WINDOW = re.compile(r"_(\d+)d$")


def concept_label(feature: str) -> str:
    """What reps read for a feature in reasons: its concept in the reasons' words, with the
    feature's window ("meetings, last 7 days"), so two windows of one concept read apart."""
    from scoring.reasons import _TYPE_LABELS, concept_of

    concept = concept_of(feature)
    if concept.startswith("type:"):
        kind = concept.removeprefix("type:")
        words = _TYPE_LABELS.get(kind, (kind.replace("_", " "),) * 2)[1]
    else:
        words = _REP_WORDS.get(concept, concept.removeprefix("attr_").replace("_", " "))
    window = _WINDOW.search(feature)
    if window is not None:
        return f"{words}, last {window.group(1)} days"
    return words + (", last 90 days" if concept == "committee_size" else "")


def tier_cutoff_table(outcomes: list[tuple[float, int]], policy: Any, mv: Any) -> list[dict[str, Any]]:
    """Precision and recall at each tier cut-off (A; A or B; A, B or C) of the active policy, on
    (probability, converted) pairs of ``mv``'s reference leads: what reps get if they work the
    leads down to that tier.

    The leads are tiered as live scoring tiers them: their 1-99 scores ranked against ``mv``'s
    score reference, as the monitor's tier norms are (:func:`scoring.monitoring.tier_conversion.reference_tiers`).
    Ranked against each other instead, tier A under "A >= 85" was the top 15 % by construction: a
    crmsim trial's card showed 10 leads in A where the monitor's norm, on the same 65 leads, had 5."""
    import numpy as np

    from scoring.reference import rank, stored_reference
    from scoring.tiers import tiers_for

    if not outcomes:
        return []
    p = np.asarray([o[0] for o in outcomes], dtype="float64")
    y = np.asarray([o[1] for o in outcomes], dtype="int64")
    score_reference = stored_reference(mv) if mv is not None else None
    scores = rank(p, score_reference["probability"]) if score_reference is not None else None
    tiers = np.asarray(tiers_for(policy, p, scores=scores), dtype=object)
    total_pos = max(1, int(y.sum()))
    rows: list[dict[str, Any]] = []
    for i, tier in enumerate(("A", "B", "C")):
        picked = np.isin(tiers, ("A", "B", "C")[: i + 1])
        n = int(picked.sum())
        hits = int(y[picked].sum())
        rows.append({"cutoff": tier, "leads": n, "share": n / len(y), "precision": hits / n if n else float("nan"),
                     "recall": hits / total_pos})
    return rows


IMPORTANCE_TOP = 15  # features the card, the HTML report and the console's chart list


def top_importance(importance: Mapping[str, float], top: int = IMPORTANCE_TOP) -> list[tuple[str, float]]:
    """The ``top`` largest feature importances, largest first (whatever order they were stored in):
    the same features on the card, in the HTML report and in the console's chart."""
    return sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top]


def live_card_sections(mv: Any, reference: Any, policy: Any) -> str:
    """Markdown added to a stored card by ``leadscore models show``: feature importance (top
    :data:`IMPORTANCE_TOP`, with the concept names reps see), precision/recall at the tier cut-offs, lift by decile and
    the promotion decision, from the model's reference cohort (its test period, seen at 7 days)."""
    import numpy as np

    from scoring.metrics import lift_by_decile

    lines: list[str] = []
    if reference is not None and reference.importance:
        lines += [f"## Feature importance (top {IMPORTANCE_TOP}, share of mean absolute contribution on the "
                  "reference leads)", "", "| feature | what reps see | share |", "| --- | --- | ---: |"]
        for name, share in top_importance(reference.importance):
            lines.append(f"| {name} | {concept_label(name)} | {share:.1%} |")
        lines.append("")
    outcomes = list(reference.outcomes) if reference is not None else []
    if outcomes:
        mode = getattr(policy, "mode", "?")
        age = getattr(reference, "age_days", None)
        lines += [f"## Precision and recall at the tier cut-offs ({mode} policy, {len(outcomes)} reference leads "
                  "with known outcome)", "",
                  # A trial read the Metrics section's test ECE and lift beside the monitor's and saw two answers.
                  f"The reference leads are the test period's leads scored as they looked {age} days after they were"
                  " created (what the monitor compares live leads with); the Metrics section scored training's"
                  " snapshots of the same period, so its test calibration and lift differ from these.", "",
                  "| work down to tier | leads | share | precision | recall |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for row in tier_cutoff_table(outcomes, policy, mv):
            lines.append(f"| {row['cutoff']} | {row['leads']} | {row['share']:.1%} | {_num(row['precision'])} | "
                         f"{_num(row['recall'])} |")
        y = np.asarray([o[1] for o in outcomes], dtype="int64")
        p = np.asarray([o[0] for o in outcomes], dtype="float64")
        if 0 < y.sum() < len(y):
            lift = lift_by_decile(y, p)
            lines += ["", "Lift by score decile (reference leads, highest first): "
                      + ", ".join(_num(float(v), 2) for v in lift)]
        lines.append("")
    else:
        lines += ["## Precision and recall at the tier cut-offs", "",
                  "Not available: no reference leads with a known outcome (run `leadscore monitor`).", ""]
    comparison = (mv.params or {}).get("comparison")
    if isinstance(comparison, dict):
        lines += ["## Champion vs challenger (same held-out leads)", "",
                  f"- {comparison.get('metric')}: this model {_num(comparison.get('challenger'), 4)} vs champion "
                  f"{comparison.get('champion_version')} {_num(comparison.get('champion'), 4)} on "
                  f"{comparison.get('leads')} leads; 90% CI of the difference {_num(comparison.get('ci_low'), 4)}.."
                  f"{_num(comparison.get('ci_high'), 4)}", f"- Retraining's decision: {mv.notes or '-'}", ""]
    return "\n".join(lines)


def hand_changes(mv: Any) -> list[str]:
    """Each promotion or rollback made by hand to ``mv``, oldest first: "promote by alice at
    2026-07-02 09:15 UTC" (the model card, `models list`, the console's and the HTML report's
    versions tables)."""
    done = [p for p in (mv.params or {}).get("promotions") or [] if isinstance(p, dict)]
    return [f"{p.get('action', '?')} by {p.get('by', 'unknown')} at {str(p.get('at', '?'))[:16].replace('T', ' ')} UTC"
            for p in done]


def status_section(mv: Any) -> str:
    """``Status: champion``, a caution where the test AUC rests on too few test leads of one class
    (:func:`scoring.registry.auc_caveat`) and, for a version promoted (or rolled back to) by hand, who did it and
    when: the stored card's notes and retraining's decision are from its evaluation, and read
    as "kept as candidate" on a champion promoted later."""
    from scoring.registry import recorded_auc_caveat

    line = f"Status: {mv.status}" + (f" (segment {mv.segment})" if mv.segment else "")
    if caveat := recorded_auc_caveat(mv):  # the metrics above read as judged otherwise
        line += f"\n\nCaution: {caveat}."
    steps = "; ".join(hand_changes(mv))
    if not steps:
        return line + "\n"
    return (line + f"\n\nChanged by hand: {steps} (the notes above and retraining's decision below are "
            "from its evaluation)\n")


__all__ = [
    "concept_label", "hand_changes", "live_card_sections", "render_model_card", "status_section", "tier_cutoff_table",
]
