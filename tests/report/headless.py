"""Render a local HTML file in headless Chromium and record what the page did (standard library only).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages separated by
NUL bytes on file descriptors 3 and 4), so no websocket client and no network port are needed. Recorded:

* console messages (``Runtime.consoleAPICalled``), uncaught exceptions (``Runtime.exceptionThrown``) and browser
  log entries (``Log.entryAdded``: failed loads, Content-Security-Policy violations, …);
* every request the page starts (``Network.requestWillBeSent``), the page itself included;
* values of JavaScript expressions evaluated after the load, and a full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium binary: $ONNX_FE_CHROMIUM, else the first of the usual names on PATH."""
    env = os.environ.get("ONNX_FE_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class PageRecord:
    url: str
    console: list[dict] = field(default_factory=list)  # {"level", "text"}
    exceptions: list[str] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)  # {"level", "source", "text", "url"}
    requests: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    screenshot: Path | None = None

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors, as text."""
        out = [f"console.{c['level']}: {c['text']}" for c in self.console if c["level"] in ("error", "assert")]
        out += [f"exception: {e}" for e in self.exceptions]
        out += [
            f"log {e['source']} {e['level']}: {e['text']} {e.get('url', '')}".strip()
            for e in self.log
            if e["level"] == "error"
        ]
        return out

    @property
    def foreign_requests(self) -> list[str]:
        """Requests other than the page itself and inline ``data:`` URLs."""
        return [u for u in self.requests if u != self.url and not u.startswith(("data:", "about:"))]


class _Pipe:
    def __init__(self, binary: str, profile: str, extra: list[str]):
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        args = [
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *extra,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # Chromium reads commands from fd 3 and writes replies to fd 4. The child moves the pipe ends there just
        # before exec; every other descriptor of this process is close-on-exec (Python's default), so the browser
        # inherits only these two and its standard streams.
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)

        def _fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [binary, *args, "about:blank"],
            preexec_fn=_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(hi_r)
        os.close(hi_w)
        self._next = 0
        self._replies: dict = {}
        self._events: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.append(self.proc.stderr.read()), daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[None] = "closed"
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0):
        self._next += 1
        mid = self._next
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if None in self._replies:
                    raise RuntimeError(
                        f"Chromium closed the pipe: {b''.join(self._stderr)[-2000:].decode(errors='replace')}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def next_event(self, timeout: float):
        """The next event, or None when none comes within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass


def render(
    html_file,
    *,
    expressions: dict | None = None,
    screenshot=None,
    width: int = 1280,
    height: int = 900,
    settle: float = 1.0,
    timeout: float = 60.0,
    binary: str | None = None,
    max_shot_height: int = 12000,
) -> PageRecord:
    """Open ``html_file`` in headless Chromium, wait for its load event (then ``settle`` quiet seconds), evaluate
    ``expressions`` (name → JavaScript returning a JSON value) and save a full-page PNG to ``screenshot``."""
    binary = binary or find_chromium()
    if not binary:
        raise FileNotFoundError("no Chromium binary found")
    url = Path(html_file).resolve().as_uri()
    rec = PageRecord(url=url)
    with tempfile.TemporaryDirectory(prefix="onnx-fe-chromium-") as profile:
        pipe = _Pipe(binary, profile, [f"--window-size={width},{height}"])
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            sess = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for dom in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{dom}.enable", session=sess)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=sess,
            )
            pipe.send("Page.navigate", {"url": url}, session=sess, timeout=timeout)
            loaded, deadline, last = False, time.monotonic() + timeout, time.monotonic()
            while True:  # until the load event, then until `settle` seconds pass with no event
                now = time.monotonic()
                wait = (last + settle - now) if loaded else (deadline - now)
                if wait <= 0:
                    break
                ev = pipe.next_event(wait)
                if ev is None:
                    continue
                last = time.monotonic()
                if ev.get("sessionId") in (None, sess):
                    _record(rec, ev)
                    loaded = loaded or ev.get("method") == "Page.loadEventFired"
            if not loaded:
                raise TimeoutError(f"{url} did not finish loading within {timeout} s")
            for name, expr in (expressions or {}).items():
                r = pipe.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=sess)
                if "exceptionDetails" in r:
                    raise RuntimeError(f"evaluating {name}: {r['exceptionDetails'].get('text')}")
                rec.values[name] = r["result"].get("value")
            if screenshot is not None:
                m = pipe.send("Page.getLayoutMetrics", session=sess)
                size = m.get("cssContentSize") or m["contentSize"]
                h = int(min(max_shot_height, size["height"]))
                shot = pipe.send(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1},
                    },
                    session=sess,
                    timeout=timeout,
                )
                p = Path(screenshot)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(base64.b64decode(shot["data"]))
                rec.screenshot = p
            while (ev := pipe.next_event(0.2)) is not None:  # anything the evaluation or the screenshot set off
                if ev.get("sessionId") in (None, sess):
                    _record(rec, ev)
        finally:
            pipe.close()
    return rec


def _record(rec: PageRecord, ev: dict) -> None:
    m, p = ev.get("method"), ev.get("params", {})
    if m == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        rec.console.append({"level": p.get("type", ""), "text": text})
    elif m == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        rec.exceptions.append(str(d.get("exception", {}).get("description") or d.get("text")))
    elif m == "Log.entryAdded":
        e = p.get("entry", {})
        rec.log.append(
            {
                "level": e.get("level", ""),
                "source": e.get("source", ""),
                "text": e.get("text", ""),
                "url": e.get("url", ""),
            }
        )
    elif m == "Network.requestWillBeSent":
        rec.requests.append(p.get("request", {}).get("url", ""))
