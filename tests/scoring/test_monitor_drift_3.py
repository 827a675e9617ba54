"""Drift, alert, retraining and recovery on the third drifting World (seed 11 by default; the
checks and the scenario: tests/scoring/monitor_sim.py). One World per file, so `make test`'s
workers, which take whole files, run the Worlds side by side."""

import pytest

from tests.scoring.monitor_sim import DriftChecks, drift_world

pytestmark = pytest.mark.slow

scenario = drift_world(3)


class TestDriftWorld(DriftChecks):
    pass
