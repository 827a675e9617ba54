"""What every CRM's router shares: the action marker, round-robin, due time, configured actions.

Pure helpers (no CRM calls), used by ``connectors/salesforce/routing.py`` and
``connectors/hubspot/routing.py``; the engine is :mod:`connectors.routing`.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Set
from datetime import datetime, timedelta

from config.app_config import AppConfig, ConnectionConfig, RoutingActionConfig
from connectors.protocols import LeadRef
from store.models import RoutingAction

MARKER_RE = re.compile(r"\[leadscore #\d+\]")


def action_marker(action_id: int) -> str:
    """The tag a created record carries so a retry can find it: ``[leadscore #123]``."""
    return f"[leadscore #{action_id}]"


NAMES_LISTED = 8  # names a refused rule's line lists of what the CRM has


def known_names(kind: str, names: Iterable[str], wanted: str) -> str:
    """`` (its campaigns: 'A', 'B' and 3 more)`` or `` (it has no campaigns)``: what the name a rule
    gave (``wanted``) could have been, the closest first, so a typo is fixed from the line alone."""
    found = sorted(set(names), key=str.casefold)
    if not found:
        return f" (it has no {kind})"
    close = difflib.get_close_matches(wanted, found, n=NAMES_LISTED, cutoff=0.5)
    found = close + [n for n in found if n not in close]
    shown = ", ".join(repr(n) for n in found[:NAMES_LISTED])
    more = f" and {len(found) - NAMES_LISTED} more" if len(found) > NAMES_LISTED else ""
    return f" (its {kind}: {shown}{more})"


def round_robin_pick(owners: list[str], crm_id: str) -> str:
    """The owner for a lead among ``owners``: deterministic per lead, spread evenly."""
    digest = hashlib.sha256(crm_id.encode("utf-8")).digest()
    return owners[int.from_bytes(digest[:8], "big") % len(owners)]


# Why an ``overwrite: false`` assignment did not run (followed by the owner's id); `status` counts
# these cancellations as "owner_kept".
OWNER_KEPT = "a user owns the lead and the rule keeps a rep's leads (overwrite: false)"


def applies(action: RoutingActionConfig, conn: ConnectionConfig, supported: Set[str]) -> bool:
    """True when ``action`` runs on ``conn``: not narrowed to other connections, and its CRM can run it."""
    if action.connections is not None and conn.name not in action.connections:
        return False
    return action.type in supported


def actions_for(config: AppConfig, conn: ConnectionConfig,
                supported: Set[str]) -> list[tuple[str, RoutingActionConfig]]:
    """The configured actions that run on ``conn``, with their config key ``routing.i.actions.j``."""
    out = []
    for r_index, rule in enumerate(config.routing):
        for a_index, action in enumerate(rule.actions):
            if applies(action, conn, supported):
                out.append((f"routing.{r_index}.actions.{a_index}", action))
    return out


def task_subject(action: RoutingAction) -> str:
    """The task subject with the action's marker, within 255 characters."""
    subject = str(action.params.get("subject") or "Follow up")
    marker = action_marker(action.id)
    return f"{subject[:255 - len(marker) - 1]} {marker}"


def task_description(action: RoutingAction, lead: LeadRef) -> str:
    """A created task's body, for the rep who gets it: the tier change, the score and its reasons
    as the lead's score fields show them, then the rule that made the task (for revops)."""
    if action.from_tier:
        head = f"leadscore moved this lead from tier {action.from_tier} to tier {action.to_tier}"
    else:
        head = f"leadscore put this lead in tier {action.to_tier} on its first score"
    if lead.score is not None:
        head += f" (score {lead.score} of 99)"
    lines = [head + "."]
    if lead.reasons:
        lines += ["Why:", *lead.reasons]
    lines.append(f"Made by routing rule {action.params.get('config_key')} (leadscore action {action.id}).")
    return "\n".join(lines)


def due(action: RoutingAction, now: datetime) -> datetime:
    """When a created task is due: ``due_hours`` (default 24) after ``now``."""
    return now + timedelta(hours=float(action.params.get("due_hours", 24)))
