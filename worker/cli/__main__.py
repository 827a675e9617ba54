"""``python -m worker.cli``: the same as the ``leadscore`` console script."""

from worker.cli.main import main

main()
