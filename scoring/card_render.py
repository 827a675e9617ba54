"""Model card (markdown) for a training run, stored with each model version.

Kept apart from :mod:`scoring.card` (what ``models show`` adds from live data) because the
registry renders the card at registration and must not depend on tiers or the monitor."""

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
        "Each lead gets a 1-99 score (its rank among the model's reference leads) and a calibrated likelihood"
        " of converting within the horizon, with the features that moved them.",
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
            f"- Test period: {split.get('test_from')} to {split.get('test_to')} (the times its leads were seen, "
            "later than all training rows; the monitor's reference names the same leads by their creation dates)"
        )
    lines += ["", "## Data audit", ""]
    if audit.dropped:
        lines += ["| feature | excluded because |", "| --- | --- |"]
        lines += [f"| {name} | {reason} |" for name, reason in audit.dropped.items()]
        lines.append("")
    # The table already says why each excluded feature went: its warnings would repeat it.
    findings = audit.findings()
    if findings:
        lines += [f"- {w}" for w in findings]
    else:
        lines.append("- No other findings." if audit.dropped else "- No findings.")
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
        (f"Method: none: {result.model.calibrator.reason}." if result.model.calibrator.reason
         else f"Method: {result.model.calibrator.method} (fitted on the validation part).")
        + f" Test ECE {_num(test.get('ece_before_calibration'))} before, {_num(test.get('ece'))} after;"
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

