"""Console users from the environment, hashed passwords, signed sessions, and the refusal to start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.errors import ConfigError
from web.auth import Authenticator, hash_password, parse_users


@pytest.mark.parametrize(("spec", "message"), [
    (None, "no console users"),
    ("  , ", "no console users"),
    ("alice", "entry 1: expected name:password:role"),
    ("alice:pw", "entry 1: expected name:password:role"),
    ("alice:pw:admin", "role must be viewer or editor"),
    ("alice:pw:editor,alice:pw2:viewer", "user 'alice' given twice"),
    (":pw:editor", "entry 1: expected name:password:role"),
])
def test_bad_user_lists_are_refused_naming_the_entry_without_the_password(spec: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_users(spec)
    assert "pw2" not in str(info.value) and (spec is None or ":pw:" not in str(info.value))


def test_plain_and_hashed_passwords_and_colons_in_passwords() -> None:
    hashed = hash_password("s3cret", iterations=1000)
    users = parse_users(f"alice:{hashed}:editor, bob:pa:ss:viewer")
    auth = Authenticator(users)
    assert auth.check("alice", "s3cret") == users["alice"] and users["alice"].can_edit
    assert auth.check("alice", hashed) is None  # the hash itself is not a password
    assert auth.check("bob", "pa:ss") == users["bob"] and not users["bob"].can_edit
    assert auth.check("bob", "pa") is None and auth.check("carol", "x") is None


def test_session_cookies_are_signed_and_expire() -> None:
    users = parse_users("alice:pw:editor")
    auth = Authenticator(users, key=b"k" * 32)
    cookie = auth.session_cookie(users["alice"], now=1000.0)
    found = auth.read_session(cookie, now=1001.0)
    assert found is not None and found[0].name == "alice"
    assert auth.read_session(cookie, now=1000.0 + 13 * 3600) is None
    forged = cookie.replace("alice|", "bob|", 1)
    assert auth.read_session(forged, now=1001.0) is None
    assert Authenticator(users, key=b"x" * 32).read_session(cookie, now=1001.0) is None  # other key
    assert auth.csrf_ok("session|n1", auth.csrf_token("session|n1"))
    assert not auth.csrf_ok("session|n2", auth.csrf_token("session|n1")) and not auth.csrf_ok("session|n1", None)


def test_the_console_refuses_to_start_without_users(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env["LEADSCORE_VAR_DIR"] = str(tmp_path)
    cli = [sys.executable, "-c", "from worker.cli import main; main()", "web", "--port", "1"]
    result = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'error: no console users: set LEADSCORE_WEB_AUTH="name:password:editor,..." (see docs/console.md)']
    env["LEADSCORE_WEB_AUTH"] = "alice:pw:boss"
    result = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "pw" not in result.stderr.replace(
        "password", "")
