"""Where a command's ``--json PATH`` goes: checked before the command does any work, written in one
way.

A trial's ``train --json /proc/nope/t.json`` trained and registered a model, then failed with
"unexpected FileNotFoundError"; a rerun registered another. Every ``--json`` option now takes
:func:`json_target` as its callback: the file's folder is made and the file opened for writing
(and removed again when it was not there) before the command starts, so a path that cannot be
written is one usage line (exit 2) and nothing is done. :func:`write_json_text` writes it, a
failure there (the disk filling meanwhile) one line too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from config.errors import LeadscoreError

STDOUT = "-"  # `explain --json -`: the JSON instead of the text


def json_target(value: Any) -> Any:
    """typer callback of a ``--json`` option: ``value`` unchanged when a file can be written there
    (its missing folders made, as the write would make them), else a usage error naming why."""
    if value is None or str(value) == STDOUT:
        return value
    path = Path(str(value))
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory: give the path of a file to write")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not existed:
        path.unlink(missing_ok=True)  # the command writes it once it has something to say
    return value


def write_json_text(path: str | Path, text: str) -> None:
    """``text`` (a JSON document) into ``path``, its folders made; an OS error is one line."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise LeadscoreError(f"cannot write {target}: {exc.strerror or exc}") from exc
