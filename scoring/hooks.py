"""The tier-change hook: the one type shared by scoring, re-tiering and routing planning.

Kept in its own module (importing only the store) so ``connectors.routing`` can name it without
importing scoring's stages, and scoring can call routing's planner without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from store.models import Lead, LeadScore

# hook(session, lead, previous current score or None for a first score, new current score):
# called inside the scoring transaction for every lead whose tier changed.
TierChangeHook = Callable[[Session, Lead, LeadScore | None, LeadScore], Any]
