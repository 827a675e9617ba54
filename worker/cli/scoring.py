"""``leadscore train / score / explain / tiers / evaluate``: the scoring commands.

Mounted at the top level by ``worker/cli/main.py``. Expected failures raise ``LeadscoreError`` (printed
on one line, exit 1); malformed arguments are usage errors (exit 2).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.app_config import load_config
from config.settings import get_settings
from store.db import get_engine, unit_of_work
from store.models import ModelStatus
from store.types import json_safe, utc_minutes
from worker.cli.console import cli_console
from worker.cli.jsonout import json_target, write_json_text

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
console = cli_console()
err = cli_console(stderr=True)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
tiers_app = typer.Typer(help="Read, change and preview tier thresholds.", no_args_is_help=True)
app.add_typer(tiers_app, name="tiers")


@contextmanager
def _session() -> Iterator[Session]:
    with unit_of_work(get_engine()) as session:
        yield session


def _config() -> Any:
    return load_config(get_settings().config_file)


def _write_json(path: Path, data: Any) -> None:
    write_json_text(path, json.dumps(data, indent=2, default=str))


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command("train")
def train_command(
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write the training summary as JSON here."),
    seed: int = typer.Option(0, help="Random seed of the split and models."),
) -> None:
    """Train on the synced leads (point in time) and register a model version."""
    from scoring.audit import other_findings
    from scoring.registry import auc_caveat
    from scoring.service import train_from_store

    config = _config()
    with _session() as session, console.status("training") as status:
        outcome = train_from_store(
            session, config=config.training, seed=seed, progress=lambda m: status.update(f"training: {m}")
        )
        summary = outcome.to_dict()
    test = summary["metrics"].get(summary["selected"], {}).get("test", {})
    console.print(
        f"model {summary['version']} ({summary['family']}, {summary['status']}): "
        f"{summary['examples']} examples, {summary['positives']} converted; "
        f"test AUC {_fmt(test.get('auc'))}, PR-AUC {_fmt(test.get('pr_auc'))}"
    )
    caveat = auc_caveat(summary.get("split"))
    if caveat is not None:
        console.print(f"  caution: {caveat}", highlight=False)
    # As the model card lists them: each excluded feature once, with why; then the other findings.
    dropped: dict[str, str] = summary["audit"]["dropped"]
    if dropped:
        console.print(f"  audit: {len(dropped)} feature{'s' if len(dropped) != 1 else ''} excluded: "
                      + "; ".join(f"{name} ({why})" for name, why in dropped.items()), highlight=False,
                      soft_wrap=True)
    warnings = other_findings(summary["audit"]["warnings"], dropped)
    for warning in warnings[:5]:
        console.print(f"  audit: {warning}", highlight=False)
    if len(warnings) > 5:
        console.print(f"  audit: {len(warnings) - 5} more findings (see --json)")
    if summary["status"] != ModelStatus.champion:
        console.print("  registered as a candidate; the champion keeps scoring until it is promoted")
    if json_path is not None:
        _write_json(json_path, summary)


@app.command("score")
def score_command(
    all_leads: bool = typer.Option(False, "--all", help="Rescore every lead, not only those whose inputs changed."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1,
                                          help="Leads per batch (default: scoring.score_run.BATCH_SIZE, 5,000)."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write the run summary as JSON here."),
) -> None:
    """Score the leads whose inputs changed since their last score (or all of them); plan routing."""
    from scoring.pipeline import score_and_plan
    from scoring.score_run import BATCH_SIZE

    config = _config()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # A transient bar on a stream that is not a terminal only leaves an empty line behind.
    with _session() as session, Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = score_and_plan(session, config, all=all_leads, batch_size=batch_size or BATCH_SIZE,
                                 progress=progress)
        data = summary.to_dict()
    tiers = ", ".join(f"{t}: {data['tiers'].get(t, 0)}" for t in ("A", "B", "C", "D"))
    console.print(
        f"scored {data['scored']} of {data['considered']} leads ({data['unchanged']} unchanged) with "
        f"{data['model']}; {data['outbox_rows']} CRM updates queued, {data['tier_changes']} tier changes"
        # The tiers the scored leads have now (tier changes count only the leads whose tier moved).
        + (f"; tiers of the {data['scored']} scored: {tiers}" if data["scored"] else "")
    )
    for name, n in sorted(data["held"].items()):
        console.print(f"{n} leads of {name} wait: a worker's sync of {name} is part-way through (some streams "
                      "read, others not yet); the scoring after it finishes scores them", highlight=False)
    if data["retiered"]:
        console.print(f"capacity cut-offs moved: {data['retiered']} leads not rescored changed tier with them "
                      "(their tier changes are counted above)", highlight=False)
    console.print(_routing_line(data["routing_planned"], "planned", data.get("routing_held", 0)))
    accounts = data.get("accounts") or {}
    console.print(f"accounts: {accounts.get('considered', 0)} recomputed, {accounts.get('changed', 0)} account "
                  f"updates queued ({accounts.get('cleared', 0)} cleared: no open lead left)", highlight=False)
    if json_path is not None:
        _write_json(json_path, data)


@app.command("explain")
def explain_command(
    lead: str = typer.Argument(..., help="The lead's CRM id (e.g. 00Q...; CONNECTION:CRMID, e.g. hubspot:5864, "
                               "in one connection) or internal id (id:N is always the internal id)."),
    json_path: str | None = typer.Option(None, "--json", metavar="PATH", callback=json_target,
                                         help="Write the lead as JSON here, as the other commands' --json do "
                                              "('-': print the JSON instead of the text)."),
    history: bool = typer.Option(False, "--history", help="Also show every earlier score of the lead."),
) -> None:
    """Show a lead's score, likelihood, fit, engagement, trend, tier and the reasons behind it."""
    from scoring.explain import NOT_IN_CRM
    from scoring.feedback import feedback_words
    from scoring.service import explain_lead

    config = _config()
    with _session() as session:
        info = explain_lead(session, lead, history=history, config=config)
    if json_path == "-":
        console.print_json(json.dumps(json_safe(info)))  # times in ISO 8601, as the console's API gives them
        return
    if json_path is not None:
        _write_json(Path(json_path), json_safe(info))
    who = ", ".join(str(v) for v in (info["name"], info["title"], info["company"]) if v)
    console.print(f"lead {info['crm_id']} (id:{info['lead_id']}){': ' + who if who else ''}", markup=False,
                  soft_wrap=True)
    if info.get("standing"):
        console.print(f"{info['standing']}: its last score while open (leadscore rescores, writes and routes open "
                      "leads only)", markup=False, highlight=False, soft_wrap=True)
    console.print(_score_line(info), markup=False, highlight=False, soft_wrap=True)
    for reason in info["reasons"]:
        left_out = f"  {NOT_IN_CRM}" if reason in info["reasons_not_in_crm"] else ""
        console.print(f"  {reason}{left_out}", markup=False, highlight=False, soft_wrap=True)
    # Two clocks: when leadscore scored it (this machine's) and the CRM data it read (the history's
    # times); a trial read 2026-12-05T09:29 here beside 2026-06-25 in the history of the same score.
    scored, data = utc_minutes(info["scored_at"]), utc_minutes(info.get("as_of"))
    on_data = f" on the CRM's data as of {data}" if info.get("as_of") and data != scored else ""
    console.print(f"model {info['model']}, scored {scored}{on_data}", markup=False, highlight=False, soft_wrap=True)
    if said := feedback_words(info.get("rep_feedback")):
        console.print(f"rep feedback (as last synced): {said}", markup=False, highlight=False, soft_wrap=True)
    for line in _routing_lines(info.get("routing_actions") or []):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if history:
        rows = info["history"]
        console.print(f"history: {len(rows)} score{'s' if len(rows) != 1 else ''}, oldest first", markup=False,
                      soft_wrap=True)
        for row in rows:
            at = utc_minutes(row["as_of"] or row["scored_at"])
            retier = f"  (re-tiered under tier policy v{row['tier_policy']})" if row.get("retier") else ""
            console.print(f"  {at}  {_score_line(row)}  model {row['model']}{retier}", markup=False,
                          highlight=False, soft_wrap=True)
            for reason in row["reasons"]:
                console.print(f"      {reason}", markup=False, highlight=False, soft_wrap=True)


ROUTING_SHOWN = 5  # a lead's newest routing actions `explain` prints (--json has them all)


def _routing_lines(actions: list[dict[str, Any]]) -> list[str]:
    """A lead's routing actions, newest first: the tier change, the action, its state and why."""
    if not actions:
        return []
    lines = [f"routing: {len(actions)} action{'s' if len(actions) != 1 else ''} planned by tier changes"
             + (f", the newest {ROUTING_SHOWN} (--json has all)" if len(actions) > ROUTING_SHOWN else "")]
    for a in actions[:ROUTING_SHOWN]:
        change = f"{a['from_tier'] or 'first score'} -> {a['to_tier']}"
        detail = a["error"] if a["status"] in ("cancelled", "failed", "superseded") and a["error"] else a["crm_ref"]
        lines.append(f"  {change}: {a['action']} {a['status']}" + (f" ({detail})" if detail else ""))
    return lines


def _score_line(info: dict[str, Any]) -> str:
    """``score 87 (+12 since 2026-06-25), likelihood 23.4 %, fit 71, engagement 92, tier A``: the
    change is against the lead's latest score at least 7 days older (else its first), whose date
    it names (a lead scored 10 days apart changed over those 10 days, not "in 7 days")."""
    change, since = info.get("score_change"), info.get("score_change_since")
    trend = ""
    if isinstance(change, int) and change:
        trend = f" ({change:+d} since {since})" if since else f" ({change:+d})"
    parts = [f"score {info['score']}{trend}", f"likelihood {info['likelihood']:.1f} %"]
    if info.get("fit") is not None:
        parts.append(f"fit {info['fit']}")
    if info.get("engagement") is not None:
        parts.append(f"engagement {info['engagement']}")
    parts.append(f"tier {info['tier']}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------- tiers


def _thresholds(args: list[str], capacity: bool) -> dict[str, float]:
    from scoring.tiers import parse_threshold_args

    if not args:
        raise typer.BadParameter("give thresholds, e.g. A=95 B=80 C=50 (or --capacity A=10% B=20% C=30%)")
    try:
        return parse_threshold_args(args, capacity=capacity)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _threshold_shape(args: list[str] | None) -> list[str] | None:
    """Malformed TIER=VALUE arguments are bad usage, found while parsing (before any database work)."""
    from scoring.tiers import parse_threshold_args

    try:
        parse_threshold_args(args or [], capacity=True)  # the shape only; mode rules come later
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return args


THRESHOLDS_HELP = "A=95 B=80 C=50 (1-99 score), --likelihood A=30 B=15 C=5, or --capacity A=10% B=20% C=30%."


def describe_tiers(mode: str, thresholds: dict[str, float]) -> str:
    """A tier policy in words: "score: A >= 95, B >= 80, C >= 50"."""
    if mode == "capacity":
        # The shares follow each other: B is the 20 % after A's 10 %, not the top 20 %.
        return (f"capacity: A top {thresholds['A']:g}%, B next {thresholds['B']:g}%, "
                f"C next {thresholds['C']:g}%")
    if mode == "likelihood":
        return "likelihood: " + ", ".join(f"{t} >= {thresholds[t]:g}%" for t in ("A", "B", "C"))
    return "score: " + ", ".join(f"{t} >= {thresholds[t]:g}" for t in ("A", "B", "C"))


def _mode(capacity: bool, likelihood: bool) -> str:
    if capacity and likelihood:
        raise typer.BadParameter("choose one of --capacity and --likelihood")
    return "capacity" if capacity else "likelihood" if likelihood else "score"


@tiers_app.command("show")
def tiers_show() -> None:
    """Print the active tier policy and how many leads each tier holds now."""
    from scoring.registry import champion, recorded_auc_caveat
    from scoring.tiers import TIERS, active_policy, current_scores

    config = _config()
    with _session() as session:
        policy = active_policy(session, config.tiers)
        current = current_scores(session)
        counts = current["tier"].value_counts().to_dict()
        versions = session.scalar(select(func.count()).select_from(type(policy))) or 0
        line = f"policy v{policy.version} of {versions} ({describe_tiers(policy.mode, dict(policy.thresholds))})"
        created = f"set by {policy.created_by or 'unknown'} at {policy.created_at:%Y-%m-%d %H:%M} UTC"
        mv = champion(session)
        # The tiers are only as good as the scores: a champion judged on too few test leads says so
        # here too, as in the console and `leadscore models list`.
        caveat = recorded_auc_caveat(mv) if mv is not None else None
        caution = f"caution: the scores come from champion {mv.version}, and {caveat}" if mv and caveat else None
    console.print(line)
    console.print(f"  {created}")
    total = int(sum(counts.values()))
    console.print(f"  {total} open leads hold a score" if total
                  else "  no open lead holds a score yet (run `leadscore score`)")
    for tier in TIERS:
        n = int(counts.get(tier, 0))
        console.print(f"  {tier}: {n} leads" + (f" ({n / total:.1%})" if total else ""))
    if caution:
        console.print(caution, highlight=False, soft_wrap=True)


def _routing_line(planned: dict[str, int], verb: str, held: int = 0) -> str:
    """What a run planned; ``held``: the actions its repeat guard held back, said when any were."""
    total = sum(planned.values())
    also = ""
    if held:
        from connectors.routing import HELD_WORDS

        also = f"; {held} {HELD_WORDS}"
    if not total:
        return (f"routing: no actions {verb}{also} (run `leadscore route` to execute pending ones)" if verb == "planned"
                else f"routing: no actions {verb}{also}")
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(planned.items()))
    hint = " (run `leadscore route`, or let the workers)" if verb == "planned" else ""
    return f"routing: {total} action{'s' if total != 1 else ''} {verb}: {parts}{also}{hint}"


def _preview_table(data: dict[str, Any]) -> Table:
    table = Table("tier", "leads", "share", "recent leads", "recent conversion")
    for tier, row in data["tiers"].items():
        rate = row["recent_conversion_rate"]
        table.add_row(tier, str(row["leads"]), f"{row['share']:.1%}", str(row["recent_leads"]),
                      "-" if rate is None else f"{rate:.1%}")
    return table


@tiers_app.command("preview")
def tiers_preview(
    thresholds: list[str] = typer.Argument(None, help=THRESHOLDS_HELP, callback=_threshold_shape),
    capacity: bool = typer.Option(False, "--capacity", help="Thresholds are shares of leads (top N%)."),
    likelihood: bool = typer.Option(False, "--likelihood", help="Thresholds are conversion likelihoods in %."),
    recent_days: int = typer.Option(180, "--recent-days", min=1, help="Window of recent labelled leads."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write the preview as JSON here."),
) -> None:
    """Show what a tier policy would do (leads per tier, recent conversion per tier, routing actions
    it would plan); changes nothing. Without thresholds: the active policy (how its tiers convert)."""
    from scoring.pipeline import preview_with_routing, reassigned_from_users
    from scoring.tiers import active_policy

    mode = _mode(capacity, likelihood)
    config = _config()
    if not thresholds and (capacity or likelihood):
        _thresholds([], capacity)  # a mode without its thresholds: the usage line
    values = _thresholds(thresholds, capacity) if thresholds else None
    with _session() as session:
        if values is None:  # a new admin's `tiers preview` (was a usage error): the policy in force
            policy = active_policy(session, config.tiers)
            mode, values = policy.mode, {t: float(v) for t, v in policy.thresholds.items()}
            console.print(f"the active policy (version {policy.version}); give thresholds to preview others",
                          markup=False, highlight=False)
        data = preview_with_routing(session, config, mode, values, recent_days=recent_days)
        session.rollback()  # a preview writes nothing, not even the first policy version
    console.print(f"preview of {describe_tiers(mode, data['thresholds'])}: {data['changes']} of "
                  f"{data['current_leads']} current leads would change tier")
    console.print(_preview_table(data))
    if data.get("score_cutoffs"):
        cuts = ", ".join(f"{t} >= {v}" for t, v in data["score_cutoffs"].items())
        console.print(f"score cut-offs: {cuts} (equal scores share a tier, so each share is met to within "
                      "one score's leads)")
    for tier, why in data.get("empty_tiers", {}).items():
        console.print(f"warning: tier {tier} would hold no lead: {why} (`tiers set` refuses these shares)",
                      markup=False, highlight=False, soft_wrap=True)
    recent = data.get("recent") or {}
    if recent.get("leads"):  # what the conversion columns were measured on, as the console says it
        console.print(f"recent conversion: {recent['leads']:,} leads created {str(recent.get('created_from'))[:10]} "
                      f"to {str(recent.get('created_to'))[:10]} with a known outcome, scored by {recent.get('model')} "
                      f"as they looked {recent.get('snapshot_days')} days in", markup=False, highlight=False,
                      soft_wrap=True)
    if caution := recent.get("caution"):
        console.print(f"caution: {caution}", markup=False, highlight=False, soft_wrap=True)
    leads = data["routing"]["leads"]
    # The leads first: "for 11 leads" after the list read as if only its last kind covered them.
    console.print(_routing_line(data["routing"]["actions"], "would be planned"
                                + (f" for {leads} lead{'s' if leads != 1 else ''}" if leads else ""),
                                data["routing"].get("held", 0)))
    if taken := data["routing"].get("reassigned_from_users"):
        console.print(f"warning: {reassigned_from_users(taken)}", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        _write_json(json_path, data)


@tiers_app.command("set")
def tiers_set(
    thresholds: list[str] = typer.Argument(None, help=THRESHOLDS_HELP, callback=_threshold_shape),
    capacity: bool = typer.Option(False, "--capacity", help="Thresholds are shares of leads (top N%)."),
    likelihood: bool = typer.Option(False, "--likelihood", help="Thresholds are conversion likelihoods in %."),
    by: str = typer.Option("cli", "--by", help="Who made the change (recorded with the policy)."),
    no_route: bool = typer.Option(False, "--no-route",
                                  help="Do not plan routing actions for the leads whose tier changed."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write what changed as JSON here."),
) -> None:
    """Activate a new tier policy, re-tier current scores (no retraining) and plan routing for the
    leads whose tier changed (unless --no-route)."""
    from scoring.pipeline import retier_and_plan

    mode = _mode(capacity, likelihood)
    values = _thresholds(thresholds or [], capacity)
    config = _config()
    with _session() as session:
        result = retier_and_plan(session, config, mode, values, created_by=by, route=not no_route)
    if result.unchanged:
        console.print(f"tier policy v{result.version} is already active with these thresholds "
                      f"({describe_tiers(mode, values)}): nothing changed, no new version")
    else:
        console.print(f"tier policy v{result.version} active ({describe_tiers(mode, values)}); "
                      f"{result.changed} leads changed tier")
        console.print("routing: not planned (--no-route)" if no_route
                      else _routing_line(result.routing_planned, "planned", result.routing_held))
    if json_path is not None:
        _write_json(json_path, {**result.to_dict(), "routed": not no_route})


# ------------------------------------------------------------------------------------- evaluate


@app.command("evaluate")
def evaluate_command(
    csv: Path = typer.Option(..., "--csv", help="CSV file with one row per lead."),
    target: str = typer.Option(..., "--target", help="The 0/1 (or yes/no) outcome column."),
    exclude: list[str] = typer.Option([], "--exclude", help="A column to leave out (repeatable)."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write the evaluation as JSON here."),
    seed: int = typer.Option(0, help="Random seed of the split and models."),
    min_per_class: int = typer.Option(500, "--min-per-class", min=1, help="Fewest examples per class to train."),
    time_column: str | None = typer.Option(
        None, "--time-column", metavar="COL",
        help="Split by this column's order (oldest 70 % train, newest 15 % test) instead of at random; "
        "it is not used as a feature.",
    ),
    max_rows: int = typer.Option(50_000, "--max-rows", min=100,
                                 help="Past this many labelled rows, evaluate a stratified random sample "
                                 "of this size (the method is stated in the output)."),
) -> None:
    """Compare CatBoost, logistic regression and random forest on any CSV, with the data audit."""
    from scoring.evaluate import evaluate_csv, format_evaluation

    started = time.monotonic()

    def stage(message: str) -> None:
        # One line per stage on stderr (stdout stays the report): a long run shows where it is.
        # "note: " marks an informational stderr line, as elsewhere in the CLI.
        print(f"note: [{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    result = evaluate_csv(
        csv, target=target, exclude=exclude, seed=seed, min_per_class=min_per_class,
        progress=stage, time_col=time_column, max_rows=max_rows,
    )
    console.print(format_evaluation(result), highlight=False)
    if json_path is not None:
        _write_json(json_path, result)
