"""Console users, password checks, signed session cookies and CSRF tokens.

Users come from the environment only (``LEADSCORE_WEB_AUTH``), never from the YAML file or the
database: ``"alice:secret:editor,bob:secret2:viewer"``, or with a hashed password in place of the
plain one (``leadscore web --hash-password`` prints ``pbkdf2_sha256$<iterations>$<salt>$<hash>``).
Viewers look; editors also change tiers and promote or roll back models.

The session cookie and the CSRF tokens are HMACs under a key that is random per process unless
``LEADSCORE_WEB_SECRET_KEY`` is set (set it when several console processes sit behind one proxy,
or sessions should survive a restart). Nothing here is stored; restarting logs everybody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

from config.errors import ConfigError

ROLES: tuple[str, ...] = ("viewer", "editor")
HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class User:
    """A console user; ``secret`` is a plain password or a ``pbkdf2_sha256$...`` hash."""

    name: str
    secret: str
    role: str

    @property
    def can_edit(self) -> bool:
        return self.role == "editor"


def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """The hashed form of ``password`` to put in ``LEADSCORE_WEB_AUTH`` instead of the plain one."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return f"{HASH_SCHEME}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def _verify(secret: str, password: str) -> bool:
    if secret.startswith(HASH_SCHEME + "$"):
        try:
            _scheme, iterations, salt, _digest = secret.split("$", 3)
            expected = hash_password(password, iterations=int(iterations), salt=salt)
        except (ValueError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(expected.encode("utf-8"), secret.encode("utf-8"))
    return hmac.compare_digest(secret.encode("utf-8"), password.encode("utf-8"))


def parse_users(spec: str | None) -> dict[str, User]:
    """Users from ``LEADSCORE_WEB_AUTH``; raises ConfigError (one line, no secret in it) when malformed or empty."""
    users: dict[str, User] = {}
    for index, entry in enumerate(part.strip() for part in (spec or "").split(",")):
        if not entry:
            continue
        # name:secret:role, the password may itself hold colons (the role never does).
        name, sep, rest = entry.partition(":")
        secret, sep2, role = rest.rpartition(":")
        if not sep or not sep2 or not name or not secret:
            raise ConfigError(f"LEADSCORE_WEB_AUTH entry {index + 1}: expected name:password:role")
        if role not in ROLES:
            raise ConfigError(f"LEADSCORE_WEB_AUTH entry {index + 1} ({name}): role must be viewer or editor")
        if name in users:
            raise ConfigError(f"LEADSCORE_WEB_AUTH: user {name!r} given twice")
        users[name] = User(name=name, secret=secret, role=role)
    if not users:
        raise ConfigError("no console users: set LEADSCORE_WEB_AUTH=\"name:password:editor,...\" (see docs/console.md)")
    return users


class Authenticator:
    """Checks passwords and issues/reads signed session cookies and CSRF tokens."""

    def __init__(self, users: dict[str, User], key: bytes | None = None) -> None:
        self.users = users
        self.key = key or secrets.token_bytes(32)

    @classmethod
    def from_environment(cls) -> Authenticator:
        raw_key = os.environ.get("LEADSCORE_WEB_SECRET_KEY")
        key = hashlib.sha256(raw_key.encode("utf-8")).digest() if raw_key else None
        return cls(parse_users(os.environ.get("LEADSCORE_WEB_AUTH")), key)

    def check(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None:
            # Same work for unknown names, so timing does not tell which names exist.
            _verify(hash_password("x", iterations=1000), password)
            return None
        return user if _verify(user.secret, password) else None

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def session_cookie(self, user: User, *, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        nonce = secrets.token_hex(8)
        body = f"{user.name}|{expires}|{nonce}"
        return f"{body}|{self._sign(body)}"

    def read_session(self, cookie: str | None, *, now: float | None = None) -> tuple[User, str] | None:
        """The user and session nonce of a valid, unexpired cookie; None otherwise."""
        if not cookie:
            return None
        body, _, signature = cookie.rpartition("|")
        if not body or not hmac.compare_digest(self._sign(body), signature):
            return None
        name, _, rest = body.partition("|")
        expires, _, nonce = rest.partition("|")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        user = self.users.get(name)
        return (user, nonce) if user is not None else None

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of one session (cookie nonce), one Basic user or one login form."""
        return self._sign("csrf|" + binding)

    def csrf_ok(self, binding: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(binding), token or "")
