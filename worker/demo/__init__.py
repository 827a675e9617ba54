"""``leadscore demo``: the whole loop, end to end, on the embedded default.

``run.py`` drives the steps (crmsim, sync, train, score, write back, route, a simulated week,
the monitor); ``measures.py`` measures what they did; ``summary.py`` prints it.
"""

from worker.demo.run import QUICK_LEADS, QUICK_MIN_PER_CLASS, demo_config, run_demo

__all__ = ["QUICK_LEADS", "QUICK_MIN_PER_CLASS", "demo_config", "run_demo"]
