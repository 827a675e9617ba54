"""The demo's summary as the user reads it: CRMs, model, tiers, routing, what reps see, the monitor."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from scoring.monitoring.describe import describe_report
from worker.cli.console import cli_console

# Plain text (no markup): styles are given as Text styles, so no name is ever parsed as a tag.
console = cli_console()  # piped (`make demo > demo.log`): lines whole, not cut at 80 columns


def print_summary(summary: dict[str, Any]) -> None:
    console.print()
    console.print(Text.assemble(("leadscore demo", "bold"), f": {summary['leads']:,} leads, "
                                f"{summary['activities']:,} activities, {summary['seconds']}s "
                                f"({summary['cpu_seconds']}s CPU)"))
    # "CRM count": the calls each CRM counted against its API limit, account look-ups included;
    # sync_run.api_calls counts every response its own stream got, refused (429) ones too.
    table = Table("CRM", "synced records", "sync API calls (CRM count)", "scores written", "write API calls")
    for name in ("salesforce", "hubspot"):
        s, w = summary["sync"].get(name, {}), summary["writeback"].get(name, {})
        table.add_row(name, f"{s.get('records', 0):,}", str(s.get("api_calls", 0)), f"{w.get('records', 0):,}",
                      str(w.get("api_calls", 0)))
    console.print(table)
    model = summary["model"]
    console.print(f"model {model['version']} ({model['family']}): test AUC {model['test_auc']} "
                  f"(oracle ceiling {model['oracle_auc']}); compared on the same later leads: "
                  + ", ".join(f"{k} {v}" for k, v in summary["models_compared"].items()))
    tiers = Table("tier", "test leads", "conversion rate", title="Held-out (latest) leads by tier")
    for tier, row in summary["tiers"].items():
        tiers.add_row(tier, f"{row['leads']:,}", f"{row['conversion_rate']:.1%}")
    console.print(tiers)
    routing = summary["routing"]
    calls = routing.get("api_calls") or {}
    console.print("routing: " + ", ".join(f"{k} {v}" for k, v in routing.items() if k != "api_calls")
                  + (f" in {calls['salesforce']} Salesforce and {calls['hubspot']} HubSpot API calls" if calls else ""))
    written = summary["writeback"]
    console.print("account fields written: " + ", ".join(
        f"{name} {written[name].get('accounts', 0):,} accounts" for name in ("salesforce", "hubspot")
        if name in written), highlight=False)
    rep = summary.get("rep_view") or {}
    if rep:
        deciles = " ".join(f"{share:.0%}" for share in rep["score_deciles"])
        console.print(f"score deciles 1-10 … 91-99 of {rep['recent_open_leads']:,} open leads created in the last "
                      f"60 days: {deciles}", highlight=False)
        reasons = rep["reasons"]
        console.print(f"most common reason on {reasons['max_share']:.0%} of scored leads: "
                      f"{reasons['most_common'] or '(none)'}", markup=False, highlight=False)
        fb = rep.get("feedback") or {}
        console.print(f"rep feedback read back from the CRMs: {fb.get('leads_with_feedback', 0):,} leads "
                      f"(left in crmsim: {rep.get('feedback_left_in_crmsim')})", markup=False, highlight=False)
        console.print(f"rescored during the simulated week: {rep['rescored_in_week']['leads']:,} leads "
                      f"(e.g. leadscore explain {rep['rescored_in_week']['example_crm_id']} --history)",
                      markup=False, highlight=False)
    refused = summary.get("refused") or {}
    by_source = summary.get("refused_by_source") or {}

    def where(kind: str) -> str:
        parts = [f"{n} {'write-back rows' if source == 'writeback' else 'routing actions'}"
                 for source, n in (by_source.get(kind) or {}).items()]
        return f" ({', '.join(parts)})" if parts else ""

    console.print("CRM refusals met: " + (", ".join(f"{k} {v}{where(k)}" for k, v in refused.items()) or "none"),
                  markup=False)
    _print_monitor(summary.get("monitor") or {})


def _print_monitor(monitor: dict[str, Any]) -> None:
    """The monitor's verdict and what it measured, on the CRM's clock (not the machine's)."""

    console.print(f"monitor as of {str(monitor.get('as_of', '?'))[:16]} (the CRM's clock): "
                  f"{str(monitor.get('status', '?')).upper()}", markup=False)
    for line in describe_report(monitor, list(monitor.get("alerts") or [])):
        console.print(f"  {line}", markup=False, highlight=False)
