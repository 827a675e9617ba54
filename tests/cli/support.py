"""Running ``leadscore`` in tests as a user does, and what a failure must look like (no tests here)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from worker.cli import main
from worker.runtime import reset_runtime

REPO = Path(__file__).resolve().parents[2]
INSPECTION_COMMANDS: list[list[str]] = [
    ["models", "list"], ["tiers", "show"], ["tiers", "preview", "A=80", "B=60", "C=30"], ["report"],
    ["monitor"], ["status"],
]


def leadscore(*args: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``leadscore ARGS`` in ``cwd`` with the LEADSCORE_* variables of this process removed."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout)


def leadscore_here(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``leadscore ARGS`` through the same ``main()`` in this process (a subprocess per case costs
    seconds of imports); the environment and working directory are set and restored around it."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        for key in [k for k in os.environ if k.startswith("LEADSCORE_")]:
            del os.environ[key]
        os.environ.update(env or {})
        os.chdir(cwd)
        reset_runtime()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        reset_runtime()
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_failure(result: subprocess.CompletedProcess[str], code: int, fragment: str = "") -> str:
    """Exit ``code``, no traceback, exactly one ``error: ...`` line on stderr (containing ``fragment``)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
