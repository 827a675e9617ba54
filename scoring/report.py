"""The model-health report: one self-contained HTML page with plots (PNG embedded as base64).

:func:`render_report` reads the registry, the monitor reports and the score history and draws
what exists: score distribution over time, PSI trend, calibration, conversion by tier, lift by
decile, AUC over time, champion vs challengers, and the most frequent reasons of current scores.
With little history (one model, one monitor report, no matured outcomes) every section still
renders and says what is missing and when it will appear. Matplotlib runs on the Agg backend;
nothing is fetched from the network when the page is opened.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring import registry
from scoring.card import hand_changes
from scoring.monitor import REFERENCE_KEY, Reference, data_clock, reports, trained_at
from scoring.monitoring.cohorts import COHORT_AGE_DAYS
from scoring.monitoring.describe import describe_measures, unsaid_notes
from scoring.time_axis import fit_time_axis
from store.models import LeadScore, ModelStatus, ModelVersion, MonitorReport

MAX_SCORE_ROWS = 200_000
TOP_REASONS = 12


def _figure(width: float = 7.5, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.grid(alpha=0.3)
    return fig, ax


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.3f}"
    if isinstance(v, datetime):
        return f"{v:%Y-%m-%d}"
    return str(v)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


# ------------------------------------------------------------------------------------ sections


def _score_distribution(session: Session, as_of: datetime) -> str:
    rows = session.execute(
        select(LeadScore.scored_at, LeadScore.score).where(LeadScore.scored_at <= as_of)
        .order_by(LeadScore.scored_at.desc()).limit(MAX_SCORE_ROWS)
    ).all()
    if not rows:
        return _missing("No scores yet: run `leadscore score`.")
    # The score reps see: the 1-99 rank (not 100 x probability, which is the likelihood field).
    df = pd.DataFrame([tuple(r) for r in rows], columns=["scored_at", "score"])
    df["scored_at"] = pd.to_datetime(df["scored_at"], utc=True)
    span = (df["scored_at"].max() - df["scored_at"].min()).days
    freq = "D" if span <= 45 else "W"
    df["period"] = df["scored_at"].dt.tz_localize(None).dt.to_period(freq).dt.start_time
    grouped = df.groupby("period")["score"]
    q = grouped.quantile([0.1, 0.25, 0.5, 0.75, 0.9]).unstack()
    fig, ax = _figure()
    x = q.index.to_pydatetime() if hasattr(q.index, "to_pydatetime") else list(q.index)
    if len(q) == 1:
        ax.hist(df["score"], bins=30, color="#4c72b0")
        ax.set_xlabel("score (1-99)")
        ax.set_ylabel("scores written")
        ax.set_title(f"Score distribution ({len(df)} scores, one {'day' if freq == 'D' else 'week'})")
    else:
        ax.fill_between(x, q[0.1], q[0.9], alpha=0.2, color="#4c72b0", label="10th-90th percentile")
        ax.fill_between(x, q[0.25], q[0.75], alpha=0.4, color="#4c72b0", label="25th-75th percentile")
        ax.plot(x, q[0.5], color="#1f3b70", label="median")
        ax.set_ylabel("score (1-99)")
        ax.set_title(f"Scores written per {'day' if freq == 'D' else 'week'}")
        ax.legend(loc="upper left", fontsize=8)
        fit_time_axis(ax, list(x))
        fig.autofmt_xdate()
    return _img(_png(fig), "score distribution over time")


def _psi_trend(history: Sequence[MonitorReport], psi_warn: float, psi_alert: float) -> str:
    points = [(r.as_of, (r.metrics or {}).get("drift", {})) for r in history]
    points = [(t, d) for t, d in points if isinstance(d.get("score_psi"), int | float)]
    if not points:
        return _missing("No drift measured yet: the monitor needs a champion with a training window and "
                        "at least 100 leads created in the live window (run `leadscore monitor` daily).")
    fig, ax = _figure()
    times = [t for t, _ in points]
    ax.plot(times, [d["score_psi"] for _, d in points], marker="o", lw=2, color="black", label="score")
    features = sorted({f for _, d in points for f in (d.get("feature_psi") or {})})
    worst = sorted(features, key=lambda f: -max((d.get("feature_psi") or {}).get(f) or 0 for _, d in points))[:5]
    for f in worst:
        ax.plot(times, [(d.get("feature_psi") or {}).get(f, np.nan) for _, d in points], marker=".", lw=1, label=f)
    values = [d["score_psi"] for _, d in points] + [
        v for _, d in points for f, v in (d.get("feature_psi") or {}).items() if f in worst and v is not None]
    top = max(2 * psi_alert, min(max(values, default=0.0) * 1.1, 4 * psi_alert))
    ax.set_ylim(0, top)
    if max(values, default=0.0) > top:
        ax.text(0.99, 0.97, "values above the top are clipped", transform=ax.transAxes, ha="right", va="top",
                fontsize=7, color="grey")
    ax.axhline(psi_warn, color="orange", ls="--", lw=1, label=f"warn {psi_warn:g}")
    ax.axhline(psi_alert, color="red", ls="--", lw=1, label=f"alert {psi_alert:g}")
    ax.set_ylabel("PSI vs reference")
    ax.set_title("Population stability (live cohort vs the champion's reference)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fit_time_axis(ax, times)
    fig.autofmt_xdate()
    return _img(_png(fig), "PSI trend")


def _calibration(latest_perf: dict[str, Any], champion: ModelVersion | None) -> str:
    table = latest_perf.get("calibration") or []
    source = (f"leads whose outcome is known, as scored at {COHORT_AGE_DAYS} days old "
              f"({latest_perf.get('served', 0):,} served scores, {latest_perf.get('reconstructed', 0):,} "
              "reconstructed from their features then)")
    if not table and champion is not None:
        table = [{"predicted": r["predicted"], "observed": r["observed"], "count": r["count"]}
                 for r in ((champion.metrics or {}).get(champion.family, {}).get("test", {}).get("calibration") or [])]
        source = "the champion's test set at training time (no live outcomes yet)"
    if not table:
        return _missing("No calibration data: neither live outcomes nor recorded test metrics.")
    fig, ax = _figure(5.5, 4.2)
    pred = [r["predicted"] for r in table]
    obs = [r["observed"] for r in table]
    size = [20 + 180 * r["count"] / max(x["count"] for x in table) for r in table]
    top = max(max(pred), max(obs), 0.05) * 1.1
    ax.plot([0, top], [0, top], ls="--", color="grey", label="perfect calibration")
    ax.plot(pred, obs, color="#4c72b0")
    ax.scatter(pred, obs, s=size, color="#4c72b0", zorder=3, label="score band (size = leads)")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed conversion rate")
    ax.set_title("Calibration")
    ax.legend(fontsize=8)
    return _img(_png(fig), "calibration curve") + f'<p class="note">Source: {html.escape(source)}.</p>'


def _conversion_by_tier(latest_perf: dict[str, Any]) -> str:
    tiers = latest_perf.get("conversion_by_tier") or {}
    if not tiers:
        return _missing("No tier outcomes yet: a tier's conversion rate appears once leads scored a full "
                        "horizon ago have known outcomes.")
    names = sorted(tiers)
    rates = [100 * tiers[t]["conversion_rate"] for t in names]
    fig, ax = _figure(5.5, 3.4)
    bars = ax.bar(names, rates, color=["#2ca02c", "#8fbc8f", "#f0ad4e", "#d9534f"][: len(names)])
    for bar, t in zip(bars, names, strict=True):
        ax.annotate(f"{tiers[t]['leads']} leads", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("converted within horizon (%)")
    ax.set_title("Conversion by tier (elapsed leads)")
    return _img(_png(fig), "conversion by tier")


def _lift(latest_perf: dict[str, Any], champion: ModelVersion | None) -> str:
    live = latest_perf.get("lift_by_decile") or []
    test: list[Any] = []
    if champion is not None:
        test = (champion.metrics or {}).get(champion.family, {}).get("test", {}).get("lift_by_decile") or []
    if not live and not test:
        return _missing("No lift data yet.")
    fig, ax = _figure(6.5, 3.4)
    width = 0.4
    x = np.arange(1, 11)
    if test:
        ax.bar(x - width / 2, [v if v is not None else 0 for v in test], width, label="champion test set")
    if live:
        ax.bar(x + width / 2, live, width, label="live elapsed leads")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xticks(x)
    ax.set_xlabel("score decile (1 = highest)")
    ax.set_ylabel("lift over average")
    ax.set_title("Lift by decile")
    ax.legend(fontsize=8)
    return _img(_png(fig), "lift by decile")


def _auc_over_time(history: Sequence[MonitorReport], versions: Sequence[ModelVersion]) -> str:
    live = [(r.as_of, (r.metrics or {}).get("performance", {})) for r in history]
    live = [(t, p) for t, p in live if isinstance(p.get("auc"), int | float)]
    recorded = [(trained_at(mv), registry.recorded_test_auc(mv), mv) for mv in versions]
    recorded = [(t, a, mv) for t, a, mv in recorded if a is not None]
    if not live and not recorded:
        return _missing("No AUC recorded yet.")
    fig, ax = _figure()
    if live:
        ax.plot([t for t, _ in live], [p["auc"] for _, p in live], marker="o", label="live AUC (elapsed leads)")
    for t, a, mv in recorded:
        marker = "*" if mv.status == ModelStatus.champion else "^"
        ax.scatter([t], [a], marker=marker, s=90, zorder=3, label=f"{mv.version} test ({mv.status})")
    baseline = live[-1][1].get("baseline_auc") if live else None
    if isinstance(baseline, int | float) and math.isfinite(baseline):
        # What the live AUC is judged against: the reference leads' AUC, not the test AUC.
        ax.axhline(baseline, ls="--", lw=1, color="grey", label=f"baseline {baseline:.3f} (reference leads)")
    all_auc = [p["auc"] for _, p in live] + [a for _, a, _mv in recorded] + (
        [baseline] if isinstance(baseline, int | float) and math.isfinite(baseline) else [])
    ax.set_ylim(max(0.0, min(all_auc) - 0.05), min(1.0, max(all_auc) + 0.05))
    ax.margins(x=0.05)
    fit_time_axis(ax, [t for t, _ in live] + [t for t, _a, _mv in recorded])
    ax.set_ylabel("AUC")
    ax.set_title("AUC over time")
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    note = "" if live else _missing("Live AUC appears once leads scored a full horizon ago have outcomes; "
                                    "only test AUCs at training time are shown.")
    return _img(_png(fig), "AUC over time") + note


def _versions_table(versions: Sequence[ModelVersion]) -> str:
    if not versions:
        return _missing("No model versions yet: run `leadscore train`.")
    rows = []
    for mv in versions:
        comp = (mv.params or {}).get("comparison") or {}
        rows.append([mv.version, mv.status, mv.family, trained_at(mv), registry.recorded_test_auc(mv),
                     comp.get("challenger"), comp.get("champion"), comp.get("improvement"),
                     "; ".join(hand_changes(mv)) or "-", mv.notes or ""])
    # "changed by hand": a champion promoted (or rolled back to) by hand read "kept as candidate"
    # in its notes, retraining's decision at its evaluation, with nothing saying who changed it.
    return _table(["version", "status", "family", "trained as of", "test AUC", "held-out (this)",
                   "held-out (champion then)", "improvement", "changed by hand", "decision / notes"], rows)


def _top_reasons(session: Session) -> str:
    counter: Counter[str] = Counter()
    for (reasons,) in session.execute(select(LeadScore.reasons).where(LeadScore.is_current.is_(True))):
        for r in reasons or []:
            counter[str(r)] += 1
    if not counter:
        return _missing("No current scores with reasons yet.")
    top = counter.most_common(TOP_REASONS)[::-1]
    fig, ax = _figure(8.5, 0.35 * len(top) + 1.2)
    labels = [t if len(t) <= 60 else t[:57] + "..." for t, _ in top]
    ax.barh(labels, [c for _, c in top], color="#4c72b0")
    ax.set_xlabel("current scores citing it")
    ax.set_title("Most frequent reasons")
    ax.tick_params(axis="y", labelsize=8)
    return _img(_png(fig), "top reasons") + _table(["reason", "leads"], [[t, c] for t, c in top[::-1]])


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.status-ok{color:#2ca02c}.status-warn{color:#e08e0b}.status-alert{color:#d62728}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
img.plot{max-width:100%;display:block;margin:8px 0}
.missing{color:#777;font-style:italic}.note{color:#555;font-size:13px}
"""
# Lets a headless browser (and a person's devtools) check that every plot decoded.
_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-ok', bad.length === 0 ? 'true' : 'false');
});
</script>
"""


def _tier_conversion_over_time(history: Sequence[MonitorReport]) -> str:
    rows = []
    for r in history:
        tc = (r.metrics or {}).get("tier_conversion") or {}
        by_tier = tc.get("by_tier") or {}
        if not by_tier:
            continue
        cells = [f"{by_tier[t]['conversion_rate']:.1%} of {by_tier[t]['leads']}" if t in by_tier else "-"
                 for t in ("A", "B", "C", "D")]
        norm = (by_tier.get("A") or {}).get("norm")
        rows.append([f"{r.as_of:%Y-%m-%d}", *cells, f"{norm:.1%}" if norm is not None else "-",
                     tc.get("status", "")])
    if not rows:
        return _missing("No tier conversion measured yet: it needs elapsed leads (created a horizon + 7 days "
                        "before the monitor's as-of) with a score at 7 days old.")
    return _table(["monitor run", "A", "B", "C", "D", "A norm", "top tier"], rows[-30:])


def _alert_history(history: Sequence[MonitorReport]) -> str:
    rows = [[f"{r.as_of:%Y-%m-%d %H:%M}", r.status, a.get("level"), a.get("kind"), a.get("message")]
            for r in history for a in (r.alerts or [])]
    if not history:
        return _missing("No monitor run yet.")
    if not rows:
        return f"<p>{len(history)} monitor runs, none raised an alert or a warning.</p>"
    return _table(["run", "status", "level", "kind", "message"], rows[-40:])


def _model_card_tables(session: Session, champion: ModelVersion | None) -> str:
    if champion is None:
        return _missing("No champion model yet.")
    from scoring.card import concept_label, tier_cutoff_table, top_importance
    from scoring.monitor import active_tier_policy

    ref = Reference.from_dict(champion.params[REFERENCE_KEY]) \
        if isinstance((champion.params or {}).get(REFERENCE_KEY), dict) else None
    if ref is None:
        return _missing("The champion has no reference yet: run `leadscore monitor` once.")
    parts = [_table(["feature", "what reps see", "share"],
                    [[n, concept_label(n), f"{v:.1%}"] for n, v in top_importance(ref.importance)])]
    cut = tier_cutoff_table(list(ref.outcomes), active_tier_policy(session), champion)
    if cut:
        parts.append(_table(["work down to tier", "leads", "share", "precision", "recall"],
                            [[r["cutoff"], r["leads"], f"{r['share']:.1%}", r["precision"], r["recall"]]
                             for r in cut]))
    families = champion.metrics or {}
    rows = [[f, part, (m.get(part) or {}).get("auc"), (m.get(part) or {}).get("brier"), (m.get(part) or {}).get("ece")]
            for f, m in families.items() if isinstance(m, dict) for part in ("validation", "test") if part in m]
    if rows:
        parts.append(_table(["family", "part", "AUC", "Brier", "ECE"], rows))
    parts.append(f"<p class='note'>Reference: {ref.rows} leads created {ref.cohort_start:%Y-%m-%d}.."
                 f"{ref.cohort_end:%Y-%m-%d} (the champion's test period), seen at {ref.age_days} days old. "
                 f"`leadscore models show {html.escape(champion.version)}` prints the whole card.</p>")
    return "".join(parts)


def _feedback(session: Session) -> str:
    """Rep feedback by tier and what later happened to flagged leads (see scoring/feedback.py)."""
    from config.app_config import load_config
    from config.errors import ConfigError
    from config.settings import get_settings
    from scoring.feedback import TIERS, VALUES, feedback_summary

    try:
        config = load_config(get_settings().config_file)
    except ConfigError:
        config = None  # default field names; the report still renders
    data = feedback_summary(session, config)
    if not data["leads_with_feedback"]:
        # Not a gap in the report: reps simply have not flagged any score (yet); say so plainly.
        return (f"<p class='note'>No rep feedback yet on {data['scored_leads']} scored leads (reps set the "
                "score feedback field in the CRM; the sync reads it back).</p>")
    # Every lead with a score, converted and closed ones too (what later happened to flagged leads is
    # the point): not the open leads `tiers show` counts (a trial read the two as disagreeing).
    tiers = _table(["tier (current score)", "scored leads, open or not", *VALUES],
                   [[t, data["by_tier"][t]["leads"], *(data["by_tier"][t][v] for v in VALUES)] for t in TIERS])
    outcomes = _table(["feedback", "leads", "converted since", "their conversion", "their tiers' unflagged leads"],
                      [[v, o["leads"], o["converted"], o["conversion_rate"], o["tier_conversion_rate"]]
                       for v, o in data["outcomes"].items()])
    note = ("<p class='note'>Feedback is evidence, not a training label: did \"Too low\" leads convert more "
            "than their tier, and \"Too high\" leads less?</p>")
    return tiers + outcomes + note


def render_report(session: Session, *, as_of: datetime | None = None, psi_warn: float = 0.1,
                  psi_alert: float = 0.25) -> str:
    """The model-health report as one self-contained HTML string (what exists; gaps are named).

    ``as_of`` None: the data's clock (the newest synced modification) for the monitor history;
    every score written so far (scores are stamped when they were written)."""
    scores_until = as_of or datetime.now(UTC)
    as_of = as_of or data_clock(session) or datetime.now(UTC)
    versions = [mv for mv in registry.list_versions(session) if mv.segment is None]
    champion = registry.champion(session)
    history = reports(session, as_of=as_of)
    latest = history[-1] if history else None
    latest_perf = ((latest.metrics or {}).get("performance") or {}) if latest else {}
    parts = [f"<h1>leadscore model health</h1><p class='note'>as of {as_of:%Y-%m-%d %H:%M} UTC</p>"]
    if champion is not None:
        parts.append(f"<p>Champion <b>{html.escape(champion.version)}</b> ({html.escape(champion.family)}), "
                     f"trained as of {trained_at(champion):%Y-%m-%d}.</p>")
    else:
        parts.append(_missing("No champion model yet: run `leadscore train`."))
    if latest is not None:
        parts.append(f"<p>Latest monitor run {latest.as_of:%Y-%m-%d %H:%M}: "
                     f"<b class='status-{html.escape(latest.status)}'>{html.escape(latest.status.upper())}</b></p>")
        if latest.alerts:
            parts.append(_table(["level", "kind", "message", "what to do"],
                                [[a.get("level"), a.get("kind"), a.get("message"), a.get("action", "")]
                                 for a in latest.alerts]))
        # The measures and notes in the words `leadscore monitor` and `leadscore report` print.
        said = describe_measures(latest.metrics or {})
        parts.append("<ul class='measures'>" + "".join(f"<li>{html.escape(line)}</li>" for line in said) + "</ul>")
        parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in unsaid_notes(latest.metrics or {}, said))
    else:
        parts.append(_missing("No monitor report yet: run `leadscore monitor` (it runs daily on the schedule)."))
    sections = [
        ("Score distribution over time", _score_distribution(session, scores_until)),
        ("PSI trend", _psi_trend(history, psi_warn, psi_alert)),
        ("Calibration", _calibration(latest_perf, champion)),
        ("Conversion by tier", _conversion_by_tier(latest_perf)),
        ("Lift by decile", _lift(latest_perf, champion)),
        ("AUC over time", _auc_over_time(history, versions)),
        ("Champion and challengers", _versions_table(versions)),
        ("Top reasons of current scores", _top_reasons(session)),
        ("Tier conversion over time", _tier_conversion_over_time(history)),
        ("Alert history", _alert_history(history)),
        ("Model card: feature importance, tier cut-offs, family comparison", _model_card_tables(session, champion)),
        ("Rep feedback on scores", _feedback(session)),
    ]
    for title, body in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>leadscore model health</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}{_CHECK}</body></html>")


__all__ = ["render_report"]
