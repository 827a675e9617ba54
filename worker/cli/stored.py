"""Which database a command on stored data reads (``var/leadscore.db``, or the demo's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from config.errors import LeadscoreError
from config.settings import get_settings
from worker.runtime import reset_runtime


def choose_database() -> None:
    """Point a command on stored data at the data there is, or say in one line that there is none.

    Without ``LEADSCORE_DATABASE_URL`` the embedded database is ``var/leadscore.db``. When it does
    not exist but a demo ran here, the demo's database is read (and a note says so), with the
    demo's configuration unless ``LEADSCORE_CONFIG_FILE`` names another: its connections and
    routing rules are the ones that data was scored and routed under (without them a tier
    preview would plan no routing). When neither exists, nothing is created: such a command
    must not leave an empty database behind (it would then hide the demo's data from every
    later command).
    """
    if os.environ.get("LEADSCORE_DATABASE_URL"):
        require_database_file()
        return

    var_dir = get_settings().var_dir
    own = var_dir / "leadscore.db"
    if own.exists():
        return
    demo = var_dir / "demo" / "leadscore.db"
    if not demo.exists():
        raise LeadscoreError(f"no leadscore database at {own} and no demo data in {demo.parent}: run "
                             "`leadscore demo`, or `leadscore db upgrade` and the quick start's first load "
                             "(or set LEADSCORE_DATABASE_URL)")
    os.environ["LEADSCORE_DATABASE_URL"] = f"sqlite:///{demo.resolve().as_posix()}"
    demo_config = demo.parent / "leadscore.yaml"
    with_config = ""
    if not os.environ.get("LEADSCORE_CONFIG_FILE") and demo_config.exists():
        os.environ["LEADSCORE_CONFIG_FILE"] = str(demo_config.resolve())
        with_config = f" with its configuration {demo_config}"
    reset_runtime()
    print(f"note: reading the demo's data in {demo}{with_config} (there is no {own}; LEADSCORE_DATABASE_URL "
          "chooses another database)", file=sys.stderr)


def sqlite_file_missing(database_url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet (`leadscore db upgrade` creates it)."""
    parsed = make_url(database_url)
    return (parsed.get_backend_name() == "sqlite" and bool(parsed.database) and parsed.database != ":memory:"
            and not Path(str(parsed.database)).exists())


def require_database_file() -> None:
    """Refuse, in one line, a SQLite database file that does not exist, before anything connects:
    connecting would create an empty file there (a typo in LEADSCORE_DATABASE_URL would leave
    one behind on every command). Only `leadscore db upgrade` and `leadscore demo` create it."""
    url = get_settings().effective_database_url
    if not sqlite_file_missing(url):
        return
    named = bool(os.environ.get("LEADSCORE_DATABASE_URL"))
    where, other = (("LEADSCORE_DATABASE_URL names it", "or correct the URL") if named
                    else ("the embedded default", "or set LEADSCORE_DATABASE_URL"))
    raise LeadscoreError(f"no database at {make_url(url).database} ({where}): run `leadscore db upgrade` to "
                         f"create it, {other}")


def no_connection_error() -> LeadscoreError:
    """The one line a command that talks to the CRM (sync, write-back, routing) prints without a
    configured connection, naming the configuration it read; after a demo, it says why the demo's
    connections are not used (they named the CRM simulator the demo ran and stopped)."""
    settings = get_settings()
    read = (f"the configuration {settings.config_file}" if settings.config_file
            else "the built-in defaults (LEADSCORE_CONFIG_FILE is not set)")
    message = f"no CRM connection in {read}: add one under 'connections' (docs/configuration.md)"
    var_dir = settings.var_dir
    demo = var_dir / "demo"
    if not os.environ.get("LEADSCORE_DATABASE_URL") and not (var_dir / "leadscore.db").exists() \
            and (demo / "leadscore.db").exists():
        message += (f"; the demo's connections ({demo / 'leadscore.yaml'}) named the CRM simulator the demo ran, "
                    "which stopped with it: start one with `leadscore crmsim serve` and connect to it as "
                    "docs/crmsim.md shows")
    return LeadscoreError(message)
