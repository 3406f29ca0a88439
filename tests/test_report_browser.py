"""The summary report in a real browser: headless Chromium, driven over the DevTools protocol.

Skipped only where no Chromium is installed (CI installs Debian's ``chromium`` in ``.ci/run``).
The protocol runs over ``--remote-debugging-pipe`` (JSON messages on file descriptors 3 and 4),
so no driver, WebSocket client or extra Python package is needed. Checks: every image decodes
(``naturalWidth > 0``), no console error, no uncaught exception, no request leaves the file (no
network), the sortable table and the map's layer buttons work; a full-page screenshot is saved
under the test's tmp dir (its path is printed; ``pytest -s`` shows it).

Set ``SPATIALFUSE_REPORT=results/report.html`` to check a report from a real run as well.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from report_tree import make_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome",
                                           "google-chrome-stable") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
         "--window-size=1280,1600"]


class Browser:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():  # the browser reads commands on fd 3 and writes replies on fd 4
            # copy both ends above 4 first, so that neither is overwritten nor left
            # close-on-exec when a pipe end already is fd 3 or 4
            r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w))
            os.dup2(r, 3)
            os.dup2(w, 4)

        # close_fds=False: subprocess would otherwise close fds 3 and 4 after preexec_fn (the
        # pipe ends themselves are non-inheritable, so nothing else leaks into the browser)
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                self._inbox.put(None)
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            for m in msgs:
                self._inbox.put(json.loads(m))

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode(errors="replace"))

    def _pump(self, deadline: float) -> None:
        msg = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg is None:
            raise RuntimeError("Chromium closed the DevTools pipe:\n"
                               + "".join(self.stderr_lines[-20:]))
        if "id" in msg:
            self._replies[msg["id"]] = msg
        else:
            self.events.append(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while self._id not in self._replies:
            self._pump(deadline)
        reply = self._replies.pop(self._id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self._pump(deadline)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)


def open_in_browser(html_path: Path, workdir: Path) -> dict:
    """Load a report and return what a reader's browser saw: images, console errors, requests,
    interaction results, and the path of a full-page screenshot."""
    workdir.mkdir(parents=True, exist_ok=True)
    b = Browser(workdir / "chromium-profile")
    try:
        target = next(t for t in b.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        sid = b.send("Target.attachToTarget", {"targetId": target["targetId"],
                                               "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable", session=sid)
        b.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session=sid)
        b.wait_for("Page.loadEventFired")

        def js(expr: str):
            r = b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                            "awaitPromise": True}, session=sid)
            if "exceptionDetails" in r:
                raise AssertionError(f"page script failed: {r['exceptionDetails']}")
            return r["result"].get("value")

        images = js("""Promise.all(Array.from(document.images).map(i => i.decode().then(
            () => ({alt: i.alt, w: i.naturalWidth}), () => ({alt: i.alt, w: 0}))))""")
        sort = js("""(() => {const t = document.querySelector('table.sortable');
            if (!t) return null;
            const th = t.tHead.rows[0].cells[0]; th.click(); th.click();
            return {cls: th.className, n: t.tBodies[0].rows.length}; })()""")
        layers = js("""(() => {const box = document.querySelector('.spotmap-box');
            if (!box) return null;
            const bs = box.querySelectorAll('.layers button'); const b = bs[bs.length - 1];
            const c = box.querySelector('[data-l]'); b.click();
            const want = 'd' + c.getAttribute('data-l').split(',')[bs.length - 1];
            c.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
            return {on: b.classList.contains('on'), cls: c.getAttribute('class'), want: want,
                    hover: box.querySelector('.hover').textContent,
                    title: c.querySelector('title').textContent,
                    maps: document.querySelectorAll('svg.spotmap').length}; })()""")
        m = b.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
        shot = b.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": m["width"], "height": min(m["height"], 12000),
                     "scale": 1}}, session=sid)
        png = workdir / f"{html_path.stem}_screenshot.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.2)  # let late console messages arrive
        while not b._inbox.empty():
            b._pump(time.monotonic() + 1)
    finally:
        b.close()
    errors = [e for e in b.events if
              (e["method"] == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "assert"))
              or e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or e["method"] == "Network.loadingFailed"]
    requests = [e["params"]["request"]["url"] for e in b.events
                if e["method"] == "Network.requestWillBeSent"]
    return {"images": images, "errors": errors, "requests": requests, "sort": sort,
            "layers": layers, "screenshot": png, "height": m["height"]}


def check_report(html_path: Path, workdir: Path) -> dict:
    seen = open_in_browser(html_path, workdir)
    print(f"\nscreenshot of {html_path}: {seen['screenshot']}")
    assert seen["images"], "the report has no images"
    broken = [i["alt"] for i in seen["images"] if i["w"] <= 0]
    assert not broken, f"images that do not load: {broken}"
    assert not seen["errors"], f"console errors: {json.dumps(seen['errors'], indent=1)[:3000]}"
    external = [u for u in seen["requests"] if not u.startswith(("file:", "data:", "about:"))]
    assert not external, f"the report fetched from the network: {external}"
    assert seen["sort"] and seen["sort"]["cls"] == "sorted-desc" and seen["sort"]["n"] > 0
    assert seen["layers"]["on"] and seen["layers"]["cls"] == seen["layers"]["want"]
    assert seen["layers"]["hover"] == seen["layers"]["title"] and " µm" in seen["layers"]["hover"]
    assert seen["screenshot"].stat().st_size > 20_000
    return seen


def test_report_in_headless_chromium(tmp_path):
    r = make_report(tmp_path / "run", conditions={"a": "control", "b": "treated"})
    seen = check_report(r["html"], tmp_path)
    assert len(seen["images"]) >= 10 and seen["layers"]["maps"] == 2


@pytest.mark.skipif(not os.environ.get("SPATIALFUSE_REPORT"),
                    reason="set SPATIALFUSE_REPORT to a report.html to check a real run")
def test_real_report_in_headless_chromium(tmp_path):
    check_report(Path(os.environ["SPATIALFUSE_REPORT"]), tmp_path)
