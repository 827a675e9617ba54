"""Routing settings checked before anything runs: statically (an action no configured connection
can run) and against each CRM (a queue, campaign, workflow, owner or field it lacks).

Used by ``leadscore config check``/``crm setup`` and the routing engine (:mod:`connectors.routing`,
which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from config.app_config import AppConfig
from config.errors import ConfigError
from connectors.registry import SUPPORTED, make_router

__all__ = ["routing_problems", "static_problems", "validate_routing"]


def static_problems(config: AppConfig) -> list[str]:
    """Routing settings wrong without asking any CRM: an action no configured connection can run."""
    out: list[str] = []
    conns = {c.name: c for c in config.connections}
    for r_index, rule in enumerate(config.routing):
        for a_index, action in enumerate(rule.actions):
            key = f"routing.{r_index}.actions.{a_index}"
            named = action.connections
            for name in named or []:
                conn = conns.get(name)
                if conn is not None and action.type not in SUPPORTED[conn.kind]:
                    out.append(f"{key}.connections: {action.type} cannot run on {conn.kind} connection {name!r}")
            if named is None and config.connections and not any(
                    action.type in SUPPORTED[c.kind] for c in config.connections):
                kinds = sorted(k for k, types in SUPPORTED.items() if action.type in types)
                out.append(f"{key}.type: {action.type} needs a {' or '.join(kinds)} connection")
    return out


def routing_problems(config: AppConfig, clients: Mapping[str, Any]) -> list[str]:
    """Every routing problem: static ones, then those each given connection's CRM reveals."""
    out = static_problems(config)
    for conn in config.connections:
        client = clients.get(conn.name)
        if client is None or not conn.enabled:
            continue
        out.extend(make_router(conn, client).problems(config, conn))
    return out


def validate_routing(config: AppConfig, clients: Mapping[str, Any]) -> None:
    """Refuse routing settings that name a queue, campaign, workflow, owner or field the CRM lacks.

    ``clients`` are the connectors' clients by connection name (connections without a client
    are only checked statically). Raises :class:`ConfigError` naming the config key, e.g.
    ``routing.0.actions.1.queue: no queue named 'X' in connection sf``.
    """
    refuse_problems(routing_problems(config, clients))


def refuse_problems(problems: Sequence[str]) -> None:
    """Raise :class:`ConfigError` with the first of ``problems`` in one line, pointing at where every
    one is listed (``leadscore crm setup``), so an admin fixes them in one pass, not one per run."""
    if problems:
        more = f" (and {len(problems) - 1} more: `leadscore crm setup` lists them all)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
