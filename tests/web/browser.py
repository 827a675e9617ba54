"""A small headless-Chromium driver over the DevTools protocol (Debian's ``chromium``, no extra driver).

Only what the console tests need: open a page, run JavaScript, wait for a condition, take a
screenshot at a given viewport. Each call is bounded in time; the browser is killed on close.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# What Chromium answers to an evaluation that a navigation interrupted.
_NAVIGATING = ("Inspected target navigated or closed", "Cannot find context with specified id",
               "Execution context was destroyed")


class BrowserError(AssertionError):
    """The page did not do what the test waited for (the message says what)."""


class Browser:
    def __init__(self, *, width: int = 1280, height: int = 900, timeout: float = 30.0,
                 binary: str = CHROMIUM) -> None:
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="leadscore-chromium-"))
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-quic",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise BrowserError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:  # noqa: S310
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self._ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.viewport(width, height)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {self.timeout} s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"javascript failed: {result['exceptionDetails'].get('text')} in {expression[:120]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except BrowserError as exc:
                # A page navigating away while it is asked: the question goes to the next page.
                if not any(m in str(exc) for m in _NAVIGATING):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"timed out waiting for {what}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_loaded(url)

    def wait_loaded(self, url_part: str = "") -> None:
        self.wait_for(
            f"document.readyState === 'complete' && location.href.includes({json.dumps(url_part)})",
            f"{url_part or 'the page'} to load",
        )

    def click_and_wait(self, selector: str, url_part: str) -> None:
        """Click an element that navigates, and wait for the next page (its URL contains ``url_part``)."""
        self.eval(f"window.__leaving = true; document.querySelector({json.dumps(selector)}).click(); true")
        self.wait_for(f"window.__leaving !== true && document.readyState === 'complete' && "
                      f"location.href.includes({json.dumps(url_part)})", f"navigation to {url_part}")

    def text(self, selector: str) -> str:
        value = self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                          f"return e ? e.innerText : null}})()")
        if value is None:
            raise BrowserError(f"no element {selector} on {self.eval('location.href')}")
        return str(value)

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)

    def screenshot(self, path: Path, *, width: int = 1280, mobile: bool = False) -> Path:
        """A full-page PNG at ``width`` CSS pixels (the viewport grows to the page's height)."""
        self.viewport(width, 900, mobile=mobile)
        height = int(self.eval("Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"))
        self.viewport(width, min(max(height, 600), 8000), mobile=mobile)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)
