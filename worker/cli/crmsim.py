"""``leadscore crmsim ...``: run the CRM simulator as a server.

``app`` is a :class:`typer.Typer` the main CLI mounts under ``crmsim``; ``serve`` starts
:class:`~crmsim.app.CRMSim`, prints URLs and credentials (optionally writes them as JSON) and
serves until interrupted.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from config.errors import LeadscoreError
from crmsim.faults import FaultSpecError, parse_fault_spec
from crmsim.strictness import StrictnessSpecError, parse_strictness

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
app = typer.Typer(help="The CRM simulator (Salesforce and HubSpot APIs over a simulated funnel).",
                  no_args_is_help=True)


def _spec_check(parse: Callable[[str | None], object]) -> Callable[[str | None], str | None]:
    """A Typer callback: ``spec`` as given when ``parse`` accepts it, else a usage error saying why."""

    def check(spec: str | None) -> str | None:
        try:
            parse(spec)
        except (FaultSpecError, StrictnessSpecError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        return spec

    return check


_check_faults = _spec_check(parse_fault_spec)
_check_strict = _spec_check(parse_strictness)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(
    leads: Annotated[int, typer.Option(min=1, help="Leads simulated over the history.")] = 12000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same CRM.")] = 0,
    faults: Annotated[str | None, typer.Option(callback=_check_faults,
                                               help="Fault spec, e.g. 'rate_429=0.1,sf.drop=0.02'.")] = None,
    info_json: Annotated[Path | None, typer.Option(help="Write URLs and credentials to this JSON file.")] = None,
    port_sf: Annotated[int, typer.Option(min=0, max=65535, help="Salesforce port (0: any free).")] = 0,
    port_hs: Annotated[int, typer.Option(min=0, max=65535, help="HubSpot port (0: any free).")] = 0,
    port_admin: Annotated[int, typer.Option(min=0, max=65535, help="Admin port (0: any free).")] = 0,
    history_days: Annotated[int, typer.Option(min=1, help="Days of simulated history.")] = 540,
    drift_day: Annotated[int | None, typer.Option(min=0, help="Day from which conversion drivers change.")] = None,
    base_rate: Annotated[float, typer.Option(min=0.01, max=0.49, help="Target 90-day conversion rate.")] = 0.10,
    csv: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                             help="Import people from a CSV (X Education layout).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (keep loopback).")] = "127.0.0.1",
    strict: Annotated[str | None, typer.Option(
        callback=_check_strict,
        help="Org set-up over the realistic defaults, e.g. 'validation_rule=0.05,hub_tier=professional' "
             "(docs/crmsim.md, Strictness).")] = None,
) -> None:
    """Start crmsim, print its URLs and credentials, and serve until Ctrl-C."""
    from crmsim.app import CRMSim
    from crmsim.csv_import import CsvImportError

    sim = CRMSim(leads=leads, seed=seed, history_days=history_days, faults=faults, drift_day=drift_day,
                 base_rate=base_rate, csv=str(csv) if csv else None, host=host, port_sf=port_sf,
                 port_hs=port_hs, port_admin=port_admin, strict=strict)
    # `kill` (SIGTERM, as service managers and `docker stop` send it) stops crmsim as Ctrl-C does:
    # servers closed and the CA folder removed (the default action would skip both). Installed before
    # anything starts, so a SIGTERM that comes as soon as the info file is written is not lost to a race.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.perf_counter()
        try:
            sim.start()
        except (CsvImportError, OSError) as exc:
            raise LeadscoreError(f"crmsim cannot start: {exc}") from exc
        info = sim.info()
        generation = sim.last_generation
        typer.echo(f"crmsim ready in {time.perf_counter() - started:.1f}s: {generation.get('new_leads', 0)} leads, "
                   f"{generation.get('new_activities', 0)} activities, simulated now {info['now']}")
        sf = info["salesforce"]
        typer.echo(f"Salesforce  {sf['instance_url']}  session_id={sf['session_id']}")
        typer.echo(f"            client_id={sf['client_id']} client_secret={sf['client_secret']}")
        typer.echo(f"            username={sf['username']} password={sf['password']}")
        typer.echo(f"            ca_bundle={sf['ca_bundle']}")
        typer.echo(f"HubSpot     {info['hubspot']['host']}  access_token={info['hubspot']['access_token']}")
        typer.echo(f"Admin       {info['admin_url']}  (GET /info /truth /counts, POST /advance /faults)")
        if info_json is not None:
            info_json.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            typer.echo(f"wrote {info_json}")
        threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("stopping crmsim")
    finally:
        sim.stop()


@app.callback()
def main() -> None:
    """The CRM simulator."""
