"""The CLI's consoles: plain text (CRM data is never read as markup), names never cut short.

On a terminal, rich fits the output to the terminal's width. Piped or redirected (``| less``, a
file, a ticket), rich would assume 80 columns and cut a table's connection and stream names to
"salesforce…"; there, tables are laid out at their natural width, up to PIPED_WIDTH columns
(``COLUMNS`` still wins when set).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPED_WIDTH = 200


def cli_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(markup=False, stderr=stderr, width=PIPED_WIDTH if piped else None)
