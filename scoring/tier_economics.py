"""What tier cut-offs are worth in money: a cost-based suggestion and the value of any policy.

The cost model (docs/console.md explains it to revops): a lead in tier C gets one SDR touch, B two,
A three, D none. Each touch costs ``touch_cost``; the j-th touch of a lead that converts wins the
share ``touch_shares[j]`` of ``conversion_value`` (later touches win less: diminishing returns).
The expected value of a policy on recent labelled leads is therefore

    sum over leads, over the touches its tier gets: touch_shares[j] × value × converted − cost

and it separates by touch: the j-th touch is worth giving exactly to the leads at or above the
score that maximises ``sum(share_j × value × converted − cost)``. Those scores are the suggested
cut-offs (C for the first touch, B the second, A the third), so the suggestion is the policy with
the highest realised value on those leads, up to the strict ordering A > B > C that tiers need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from config.app_config import TOP_SCORE
from scoring.tiers import Policy, PolicyLike, probability_to_score, tiers_for

# Touches each tier gets, and the share of a conversion the 1st, 2nd and 3rd touch win.
TOUCHES: Mapping[str, int] = {"A": 3, "B": 2, "C": 1, "D": 0}
DEFAULT_TOUCH_SHARES: tuple[float, float, float] = (0.6, 0.25, 0.15)


class EconomicsError(ValueError):
    """Inputs the cost model cannot use (the message says which)."""


@dataclass(frozen=True)
class Suggestion:
    thresholds: dict[str, float]
    expected_value: float
    leads: int
    conversions: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "expected_value": self.expected_value, "leads": self.leads,
                "conversions": self.conversions, "note": self.note}


def _check(conversion_value: float, touch_cost: float, shares: Sequence[float]) -> None:
    if not np.isfinite(conversion_value) or conversion_value <= 0:
        raise EconomicsError("the value of a converted lead must be a positive number")
    if not np.isfinite(touch_cost) or touch_cost < 0:
        raise EconomicsError("the cost of an SDR touch must be zero or more")
    if len(shares) != 3 or any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1 + 1e-9:
        raise EconomicsError("touch shares must be three numbers within [0, 1] adding up to at most 1")


def policy_value(
    probabilities: np.ndarray, converted: np.ndarray, policy: PolicyLike, *, conversion_value: float,
    touch_cost: float, touch_shares: Sequence[float] = DEFAULT_TOUCH_SHARES, scores: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> float:
    """Realised value of ``policy`` on labelled leads under the touch model (module docstring).

    ``scores``: the leads' 1-99 rank scores, which score-mode thresholds cut (``RecentLabelled.scores``).
    ``reference``: for a capacity policy, the scores its shares are cut on (the open leads' current
    scores, as ``tiers preview`` and ``tiers set`` cut them); default: the labelled leads' own."""
    _check(conversion_value, touch_cost, touch_shares)
    y = np.asarray(converted, dtype="float64")
    probs = np.asarray(probabilities, dtype="float64")
    # The same scores the suggestion cuts: the ranks when given, else the probability in whole percent.
    tiers = tiers_for(policy, probs, scores=probability_to_score(probs) if scores is None else scores,
                      reference=reference)
    total = 0.0
    for tier, outcome in zip(tiers, y, strict=True):
        for j in range(TOUCHES[tier]):
            total += touch_shares[j] * conversion_value * outcome - touch_cost
    return float(total)


def suggest_thresholds(
    probabilities: np.ndarray, converted: np.ndarray, *, conversion_value: float, touch_cost: float,
    touch_shares: Sequence[float] = DEFAULT_TOUCH_SHARES, scores: np.ndarray | None = None,
) -> Suggestion:
    """Score cut-offs A > B > C maximising the realised value on labelled leads (module docstring).

    ``scores``: the leads' 1-99 rank scores (score-mode thresholds cut those); without them the
    probability in whole percent."""
    _check(conversion_value, touch_cost, touch_shares)
    y = np.asarray(converted, dtype="float64")
    scores = probability_to_score(np.asarray(probabilities, dtype="float64")) if scores is None \
        else np.asarray(scores, dtype="int64")
    if len(y) == 0:
        raise EconomicsError("no recent labelled leads to weigh cut-offs on")
    # gain[t] = sum over leads scored >= t of (share × value × y − cost), for t = 0..101.
    per_score_y = np.bincount(scores, weights=y, minlength=101)[:101]
    per_score_n = np.bincount(scores, minlength=101)[:101].astype("float64")
    ys_at_least = np.concatenate([np.cumsum(per_score_y[::-1])[::-1], [0.0]])
    n_at_least = np.concatenate([np.cumsum(per_score_n[::-1])[::-1], [0.0]])
    cut: dict[str, int] = {}
    for tier, share in zip(("C", "B", "A"), touch_shares, strict=True):
        gain = share * conversion_value * ys_at_least - touch_cost * n_at_least
        candidates = gain[1:]  # cut-offs 1..101 (a threshold of 0 is not a valid score cut-off)
        best = int(np.flatnonzero(candidates == candidates.max())[-1]) + 1  # ties: fewer touches
        cut[tier] = best
    if all(cut[t] == 101 for t in ("A", "B", "C")):
        # Not even the first touch pays on any lead: "everything D" (worth 0) is what the numbers
        # say, and no policy can be it (tiers keep A > B > C within 1-99). Say so, with the cost
        # of the leanest policy below, instead of a note per tier and a suggestion that looks chosen.
        touched = int(n_at_least[TOP_SCORE - 2])
        notes = [f"no touch pays for itself at this value and cost (even the first touch of the best-scored "
                 f"leads loses money): the numbers say touch no lead; tiers must keep A > B > C, so this is "
                 f"the fewest touches they allow ({touched} leads scored {TOP_SCORE - 2} or more) and it "
                 "still loses. "
                 "Check the value of a converted lead and the cost of a touch"]
    else:
        notes = [f"no lead pays for tier {t}'s touches: {t} is left at its highest cut-off"
                 for t in ("A", "B", "C") if cut[t] == 101]
    # Tiers need A > B > C within the scores (1-99): push the lower cut-offs down (never the
    # higher ones up).
    natural = dict(cut)
    cut["A"] = min(cut["A"], TOP_SCORE)
    cut["B"] = min(cut["B"], cut["A"] - 1)
    cut["C"] = min(cut["C"], cut["B"] - 1)
    if cut["C"] < 1:
        cut = {"A": 3, "B": 2, "C": 1}
        notes.append("every lead pays for every touch: cut-offs at the lowest scores")
    else:
        # A pushed cut-off leaves its tier one score wide: say so, or revops read a B of one score
        # (51/50/24) as a considered band.
        for tier, above in (("B", "A"), ("C", "B")):
            if natural[tier] != cut[tier] and natural[tier] <= 100 and natural[above] <= 100:
                notes.append(f"tier {tier}'s touch pays from the same score as {above}'s ({natural[tier]}), so "
                             f"{tier} is left one score wide (only score {cut[tier]}): treat {above} and {tier} "
                             "as one band")
    thresholds = {t: float(cut[t]) for t in ("A", "B", "C")}
    # Valued on the scores it was cut on (not the probability in whole percent).
    value = policy_value(probabilities, y, Policy("score", thresholds), conversion_value=conversion_value,
                         touch_cost=touch_cost, touch_shares=touch_shares, scores=scores)
    return Suggestion(thresholds, value, int(len(y)), int(y.sum()), "; ".join(notes) or None)
