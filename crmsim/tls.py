"""TLS material for crmsim's HTTPS servers: one throw-away CA per process (``trustme``).

``simple-salesforce`` builds every URL with ``https://``, so the Salesforce simulator must speak
TLS. Clients trust the CA through :func:`ca_bundle_path` (give it to ``requests.Session.verify``
with ``trust_env = False``: ``REQUESTS_CA_BUNDLE`` would otherwise override it).
"""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class _Material:
    ca: trustme.CA
    server_cert: trustme.LeafCert
    ca_pem_path: str


_lock = threading.Lock()
_material: _Material | None = None
_PREFIX = "crmsim-tls-"  # then the owning process's id and a random part


def _sweep_stale(folder: Path) -> None:
    """Remove the CA folders of crmsim processes that no longer run: a process killed outright
    (SIGKILL, a crash) never reaches its exit hook, and each left a folder behind."""
    for path in folder.glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # another user's process, alive
            continue


def _get_material() -> _Material:
    global _material
    with _lock:
        if _material is None:
            ca = trustme.CA(organization_name="crmsim test CA")
            cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
            _sweep_stale(Path(tempfile.gettempdir()))
            folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
            # The folder lives as long as the process: clients may still read it at exit.
            atexit.register(shutil.rmtree, folder, True)
            path = Path(folder) / "crmsim-ca.pem"
            ca.cert_pem.write_to_path(str(path))
            _material = _Material(ca=ca, server_cert=cert, ca_pem_path=str(path))
        return _material


def server_ssl_context() -> ssl.SSLContext:
    """A new server-side SSLContext holding the process-wide certificate for 127.0.0.1/localhost."""
    material = _get_material()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    material.server_cert.configure_cert(context)
    return context


def ca_bundle_path() -> str:
    """Path of the PEM file holding the CA that signed every crmsim server certificate."""
    return _get_material().ca_pem_path
