"""The HTML browser in a real headless Chromium: no console errors, no network, search, feature pages,
and hostile corpus text shown as text, never run.

Chromium is driven over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so the test needs no free port and no
websocket library. Without chromium on PATH the test is skipped, except under CI=true, where it fails.
Screenshots land in tests/artifacts/ (git-ignored).
"""

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_reports import HOSTILE_EXPLANATION, HOSTILE_TOKENS, edge_reports, hostile_report, make_reports

from autointerp.export import export

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
)
TIMEOUT_S = 15.0
# Run by a small Python wrapper: move the two pipe ends (argv 1, 2) onto fds 3 and 4, then exec
# Chromium (argv 3...). A wrapper instead of preexec_fn, which is unsafe in a threaded process.
WIRE_FDS_AND_EXEC = (
    "import fcntl, os, sys\n"
    "high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3]]\n"
    "for fd in sys.argv[1:3]: os.close(int(fd))\n"
    "os.dup2(high[0], 3); os.dup2(high[1], 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but no chromium on PATH: the CI script must `apt-get install -y chromium`")
    pytest.skip("chromium not on PATH (apt-get install -y chromium); CI=true makes this a failure")


class PipeCDP:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, binary: str, user_data_dir: Path) -> None:
        cmd_read, self._cmd_write = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._out_read, out_write = os.pipe()  # Chromium writes replies and events on fd 4
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WIRE_FDS_AND_EXEC,
                str(cmd_read),
                str(out_write),
                binary,
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={user_data_dir}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(cmd_read, out_write),
        )
        os.close(cmd_read)
        os.close(out_write)
        self._next_id = 0
        self._inbox: queue.Queue[dict | None] = queue.Queue()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._out_read, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._inbox.put(None)
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))

    def _pump(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no message from Chromium in time")
        message = self._inbox.get(timeout=remaining)
        if message is None:
            raise RuntimeError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
        if "id" not in message:
            self.events.append(message)
        return message

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            request["sessionId"] = session
        os.write(self._cmd_write, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            message = self._pump(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_event(self, method: str, since: int = 0) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            since = len(self.events)
            self._pump(deadline)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_write)
        self._reader.join(timeout=5)
        os.close(self._out_read)


class Page:
    """One tab attached in flat mode, with console, log, network and page events enabled."""

    def __init__(self, cdp: PipeCDP) -> None:
        self.cdp = cdp
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.cdp.send(method, params, self.session)

    def goto(self, url: str) -> None:
        since = len(self.cdp.events)
        self.call("Page.navigate", {"url": url})
        self.cdp.wait_event("Page.loadEventFired", since)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"page threw on {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, max_height: int = 2400) -> None:
        """The whole page down to max_height CSS pixels, as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def errors(self) -> list[str]:
        found = []
        for event in self.cdp.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.cdp.events
            if e.get("sessionId") == self.session and e.get("method") == "Network.requestWillBeSent"
        ]


REPORTS = make_reports(40) + [hostile_report()] + edge_reports(900)
VISIBLE_ROWS = "[...document.querySelectorAll('#feature-rows tr[data-feature]')].filter(r => !r.hidden).length"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    (index,) = export("html", REPORTS, out, title="autointerp test export")
    return index


@pytest.fixture(scope="module")
def page(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    cdp = PipeCDP(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        tab = Page(cdp)
        tab.goto(site.as_uri())
        yield tab
    finally:
        cdp.close()


def show(page: Page, hash_: str) -> None:
    page.js(f"location.hash = {json.dumps(hash_)}")
    # hashchange is dispatched asynchronously; a second evaluate runs after it.
    page.js("0")


def set_search(page: Page, text: str) -> None:
    page.js(
        f"(() => {{ const s = document.getElementById('search'); s.value = {json.dumps(text)}; "
        "s.dispatchEvent(new Event('input')); })()"
    )


def test_list_renders_and_search_filters(page: Page, site: Path) -> None:
    show(page, "")
    assert page.js(VISIBLE_ROWS) == len(REPORTS)
    assert page.js("document.getElementById('count').textContent") == f"{len(REPORTS)} features"

    page.js("document.getElementById('search').focus()")
    page.call("Input.insertText", {"text": "bodies of water"})
    expected = sum(1 for r in REPORTS if r.explanation and "bodies of water" in r.explanation.text)
    assert expected > 1
    assert page.js(VISIBLE_ROWS) == expected
    assert page.js("document.getElementById('count').textContent") == f"{expected} of {len(REPORTS)} features"

    set_search(page, "")
    page.call("Input.insertText", {"text": "666"})
    assert page.js(VISIBLE_ROWS) == 1
    assert (
        page.js("[...document.querySelectorAll('#feature-rows tr[data-feature]')].find(r => !r.hidden).dataset.feature")
        == "666"
    )

    set_search(page, "no such words")
    assert page.js(VISIBLE_ROWS) == 0
    assert page.js("document.querySelector('.empty-row').hidden") is False
    set_search(page, "")
    assert page.js(VISIBLE_ROWS) == len(REPORTS)
    page.screenshot(ARTIFACTS / "browser-list.png")
    assert page.errors() == []


def test_feature_page_shows_every_window_token(page: Page) -> None:
    report = REPORTS[5]
    show(page, f"#feature-{report.feature}")
    assert page.js("document.getElementById('list-view').hidden") is True
    assert page.js("document.querySelector('#feature-view h2').textContent") == f"Feature {report.feature}"
    assert page.js("document.querySelector('#feature-view .explanation').textContent") == report.explanation.text
    assert page.js("document.querySelectorAll('#feature-view .tok').length") == sum(
        len(w.tokens) for w in report.windows
    )
    for split in ("explain", "score"):
        windows = [w for w in report.windows if w.split == split]
        selector = f"#feature-view section[data-split={split}]"
        assert page.js(f"document.querySelectorAll('{selector} .window').length") == len(windows)
        assert page.js(f"document.querySelectorAll('{selector} .tok').length") == sum(len(w.tokens) for w in windows)
    labels = page.js("[...document.querySelectorAll('#feature-view .group-label')].map(e => e.firstChild.textContent)")
    assert labels == [
        "top",
        "interval 2",
        "interval 1",
        "interval 0",
        "top",
        "interval 2",
        "interval 1",
        "interval 0",
        "random",
        "non-activating",
    ]
    # Peak token fully shaded, zero tokens clear.
    alphas = page.js(
        "[...document.querySelectorAll('#feature-view .tok')].map(e => getComputedStyle(e).backgroundColor)"
    )
    assert "rgb(255, 122, 0)" in alphas and "rgba(255, 122, 0, 0)" in alphas
    # Charts: one dot per non-empty reliability level, one bar per non-empty histogram bin, the diagonal.
    reliability = json.loads(report.scores["json"])["details"]["reliability"]
    assert page.js("document.querySelectorAll('svg.reliability circle').length") == sum(
        1 for r in reliability if r["count"]
    )
    assert page.js("document.querySelectorAll('svg.reliability line.diag').length") == 1
    assert page.js("document.querySelectorAll('svg.histogram rect').length") == sum(
        1 for c in report.stats.histogram_counts if c
    )
    assert (
        page.js("document.querySelector('table.scores tr.headline td:nth-child(2)').textContent")
        == f"{report.scores['correlation']:.3f}"
    )
    assert page.errors() == []


def test_hostile_text_is_shown_and_never_run(page: Page) -> None:
    show(page, "#feature-666")
    assert page.js("typeof window.__pwned") == "undefined"
    assert page.js("document.querySelectorAll('img').length") == 0
    assert page.js("document.scripts.length") == 2
    assert page.js("document.querySelector('#feature-view .explanation').textContent") == HOSTILE_EXPLANATION
    tokens = page.js("[...document.querySelectorAll('#feature-view .tok')].map(e => e.textContent)")
    for token in (
        '<img src=x onerror="window.__pwned=1">',
        "<script>alert(1)</script>",
        ' "quoted"',
        " AT&T",
        " &amp;",
        "</script><!--",
    ):
        assert tokens.count(token) == 2, token  # one window per split carries the hostile tokens
    assert tokens.count("line\u21b5break") == 2 and tokens.count("\u21e5tab") == 2
    width = page.js(
        "[...document.querySelectorAll('#feature-view .tok')]"
        ".find(e => e.textContent.startsWith('<img')).getBoundingClientRect().width"
    )
    assert width > 50  # laid out as visible text
    assert len(HOSTILE_TOKENS) == 9
    page.screenshot(ARTIFACTS / "browser.png")
    assert page.errors() == []


def test_failed_and_missing_features(page: Page) -> None:
    show(page, "#feature-8")  # failed to explain: no explanation, no scores, a recorded error
    assert "No explanation." in page.js("document.getElementById('feature-view').textContent")
    assert page.js("document.querySelector('#feature-view .errors li').textContent").startswith("explain:")
    assert page.js("document.querySelectorAll('svg.reliability').length") == 0
    show(page, "#feature-903")  # no windows
    assert page.js("document.querySelectorAll('#feature-view .tok').length") == 0
    show(page, "#feature-123456")
    assert "not in this export" in page.js("document.getElementById('feature-view').textContent")
    show(page, "#")
    assert page.js("document.getElementById('list-view').hidden") is False
    assert page.errors() == []


def test_no_errors_and_no_network(page: Page) -> None:
    assert page.errors() == []
    urls = page.requested_urls()
    assert urls and all(re.match(r"(file|data|about):", url) for url in urls), urls


def test_dump_dom(site: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            chromium_binary(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            site.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dom = result.stdout
    assert dom.count("<tr data-feature=") == len(REPORTS)
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=2" in dom  # the hostile explanation, as text
    assert "<img" not in dom
