"""Model card (markdown) for a training run, stored with each model version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scoring.training import TrainingResult

_TABLE_METRICS = (
    ("auc", "AUC"),
    ("pr_auc", "PR-AUC"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("precision_at_10pct", "Prec@10%"),
    ("recall_at_10pct", "Rec@10%"),
    ("lift_top_decile", "Lift@10%"),
)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _when(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def render_model_card(
    result: TrainingResult, *, version: str, train_window: tuple[Any, Any] | None, notes: str = ""
) -> str:
    """Markdown card: intended use, data, audit findings, metrics of all families, calibration, limits."""
    audit = result.audit
    split = result.split
    chosen = result.metrics[result.selected]
    lines: list[str] = [f"# Lead scoring model {version}", ""]
    lines += [
        "## Intended use",
        "",
        "Ranks open leads by their estimated probability of converting, so reps work the most promising first.",
        "Scores are calibrated probabilities (0-1, shown as 0-100) and come with the features that moved them.",
        "Not for decisions about individuals outside the sales process,"
        " nor a substitute for judgement on a single lead.",
        "",
        "## Model",
        "",
        f"- Selected family: **{result.selected}** (best validation {result.params.get('selection_metric', 'auc')})",
        f"- Parameters: `{result.model.params}`",
        f"- Features ({len(result.spec.columns)}): numeric {', '.join(result.spec.numeric) or '-'};"
        f" categorical {', '.join(result.spec.categorical) or '-'}",
        "",
        "## Data",
        "",
        f"- Rows: {audit.rows} ({audit.positives} converted, {audit.negatives} not;"
        f" base rate {audit.positives / max(1, audit.rows):.1%})",
    ]
    if train_window is not None:
        lines.append(f"- Training window: {_when(train_window[0])} to {_when(train_window[1])}")
    kind = split.get("kind", "?")
    lines.append(
        f"- Split ({kind}): {split.get('train_rows')} train / {split.get('validation_rows')} validation /"
        f" {split.get('test_rows')} test; positives {split.get('train_positives')} /"
        f" {split.get('validation_positives')} / {split.get('test_positives')}"
    )
    if kind == "time":
        lines.append(
            f"- Test period: {split.get('test_from')} to {split.get('test_to')} (later than all training rows)"
        )
    lines += ["", "## Data audit", ""]
    if audit.dropped:
        lines += ["| feature | excluded because |", "| --- | --- |"]
        lines += [f"| {name} | {reason} |" for name, reason in audit.dropped.items()]
        lines.append("")
    if audit.warnings:
        lines += [f"- {w}" for w in audit.warnings]
    else:
        lines.append("- No findings.")
    lines += ["", "## Metrics", "", "Validation chose the model; test was measured once, afterwards.", ""]
    lines.append("| model | part | " + " | ".join(label for _, label in _TABLE_METRICS) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in _TABLE_METRICS) + " |")
    for family, parts in result.metrics.items():
        for part in ("validation", "test"):
            if part in parts:
                name = f"**{family}**" if family == result.selected else family
                cells = " | ".join(_num(parts[part].get(key)) for key, _ in _TABLE_METRICS)
                lines.append(f"| {name} | {part} | {cells} |")
    test = chosen.get("test", {})
    lines += [
        "",
        "## Calibration",
        "",
        f"Method: {result.model.calibrator.method} (fitted on the validation part)."
        f" Test ECE {_num(test.get('ece_before_calibration'))} before, {_num(test.get('ece'))} after;"
        f" Brier {_num(test.get('brier_before_calibration'))} before, {_num(test.get('brier'))} after.",
        "",
    ]
    table = test.get("calibration") or []
    if table:
        lines += ["| bin | predicted | observed | leads |", "| ---: | ---: | ---: | ---: |"]
        lines += [
            f"| {row['bin']} | {_num(row['predicted'])} | {_num(row['observed'])} | {row['count']} |" for row in table
        ]
        lines.append("")
    lift = test.get("lift_by_decile") or []
    if lift:
        lines += ["Lift by score decile (test, highest first): " + ", ".join(_num(v, 2) for v in lift), ""]
    lines += [
        "## Limitations",
        "",
        "- Learns from past conversions: changes in market, offer or sales process make it stale; monitor and retrain.",
        "- Features filled in after first contact would leak the outcome; the audit drops obvious leaks only.",
        "- Calibration holds for leads like the training population; new sources or segments may drift.",
        "- Reasons describe the model, not causes: a reason is what moved the score, not why a lead buys.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def concept_label(feature: str) -> str:
    """The name reps see in reasons for the concept a feature belongs to."""
    from scoring.reasons import _TYPE_LABELS, concept_of

    concept = concept_of(feature)
    if concept.startswith("type:"):
        kind = concept.removeprefix("type:")
        return _TYPE_LABELS.get(kind, (kind.replace("_", " "),) * 2)[1]
    named = {"high_intent": "high-intent page visits", "content": "content depth", "persona": "job title (persona)"}
    return named.get(concept, concept.replace("_", " "))


def tier_cutoff_table(outcomes: list[tuple[float, int]], policy: Any) -> list[dict[str, Any]]:
    """Precision and recall at each tier cut-off (A; A or B; A, B or C) of the active policy, on
    (probability, converted) pairs: what reps get if they work the leads down to that tier."""
    import numpy as np

    from scoring.tiers import tiers_for

    if not outcomes:
        return []
    p = np.asarray([o[0] for o in outcomes], dtype="float64")
    y = np.asarray([o[1] for o in outcomes], dtype="int64")
    tiers = np.asarray(tiers_for(policy, p), dtype=object)
    total_pos = max(1, int(y.sum()))
    rows: list[dict[str, Any]] = []
    for i, tier in enumerate(("A", "B", "C")):
        picked = np.isin(tiers, ("A", "B", "C")[: i + 1])
        n = int(picked.sum())
        hits = int(y[picked].sum())
        rows.append({"cutoff": tier, "leads": n, "share": n / len(y), "precision": hits / n if n else float("nan"),
                     "recall": hits / total_pos})
    return rows


def live_card_sections(mv: Any, reference: Any, policy: Any) -> str:
    """Markdown added to a stored card by ``leadscore models show``: feature importance (top 15,
    with the concept names reps see), precision/recall at the tier cut-offs, lift by decile and
    the promotion decision, from the model's reference cohort (its test period, seen at 7 days)."""
    import numpy as np

    from scoring.metrics import lift_by_decile

    lines: list[str] = []
    if reference is not None and reference.importance:
        lines += ["## Feature importance (top 15, share of mean absolute contribution on the reference leads)", "",
                  "| feature | what reps see | share |", "| --- | --- | ---: |"]
        for name, share in list(reference.importance.items())[:15]:
            lines.append(f"| {name} | {concept_label(name)} | {share:.1%} |")
        lines.append("")
    outcomes = list(reference.outcomes) if reference is not None else []
    if outcomes:
        mode = getattr(policy, "mode", "?")
        lines += [f"## Precision and recall at the tier cut-offs ({mode} policy, {len(outcomes)} reference leads "
                  "with known outcome)", "", "| work down to tier | leads | share | precision | recall |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for row in tier_cutoff_table(outcomes, policy):
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
                  f"{_num(comparison.get('ci_high'), 4)}", f"- Decision: {mv.notes or '-'}", ""]
    return "\n".join(lines)
