"""The bootstrap's stats page in a real headless Chromium over a real docker network: opened before
a job exists, it shows the demo job (submitted through the CLI) without a reload, renders a
stranger's job name as text, explains a failed job (an image no node has) on the Failed card and
in the job view, draws the last hour, and leaves screenshots at 1280 and 800 px wide in
$DISTRIBUTEAI_ARTIFACTS (default: test-artifacts/ at the repository's root, git-ignored).

Chromium is driven over its DevTools protocol (a websocket, with trio-websocket, already a libp2p
dependency): no selenium, no driver binary. Under CI a missing Chromium fails the test
(scripts/setup.sh installs the Debian package `chromium`); elsewhere it skips.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from distributeai.bootstrap.service import Stats
from distributeai.tools.devnet import Devnet
from distributeai.p2p.identity import peer_id_from_public_key

from .netfixtures import DEMO_STDOUT, missing, submit_json
from .protocol_fixtures import EXECUTORS, SUBMITTER, certified_job

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("DISTRIBUTEAI_ARTIFACTS") or REPO / "test-artifacts")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-proxy-server", "--window-size=1360,1000", "--hide-scrollbars"]
# Safety nets, not speed checks: they cost nothing when things work, and CI runs on 2 loaded cores.
CHROMIUM_START_TIMEOUT_S = 60
PAGE_TIMEOUT_S = 60
# A job name no browser should ever treat as markup: were it injected as HTML, #pwned would exist
# and the onerror handler would rename the document.
HOSTILE_NAME = '<img src=x onerror="document.title=\'pwned\'"><b id="pwned">demo</b> & "hash"'
DEMO_JOB = {"name": HOSTILE_NAME, "docker_image": "alpine:latest",
            "command": ["sh", "-c", "echo 'Hello' | sha256sum"], "required_cpu": 1, "required_memory": 256}
MISSING_IMAGE_JOB = {"name": "render scene 7", "docker_image": "nosuch:image", "command": ["true"]}


def certificate(outputs: list[bytes], nonce: bytes) -> bytes:
    """A signed certificate of a job run by EXECUTORS[:len(outputs)] with these outputs."""
    return certified_job(outputs, nonce=nonce).certificate


def test_stats_fold_certificates_into_nodes_and_count_each_once():
    stats = Stats()
    submitter = peer_id_from_public_key(SUBMITTER.public_key)
    ex = [peer_id_from_public_key(e.public_key) for e in EXECUTORS]
    verified = certificate([b"B", b"A", b"A"], b"\x01" * 16)  # B revealed first: dissent
    nondet = certificate([b"A", b"B", b"C"], b"\x02" * 16)
    for raw in (verified, nondet, verified, nondet):  # each certificate twice: replays
        stats.observe(raw, submitter)
    stats.observe(b"junk", "12D3KooWstranger")
    assert stats.rejected == {"replay": 2, "malformed": 1}, stats.rejected
    assert dict(stats.certified) == {"verified": 1, "nondeterministic": 1}
    assert stats.per_minute() == {"certified": 2, "announced": 0}
    rows = {r["peer_id"]: r for r in stats.nodes_detail({ex[3]}, submitter)}
    assert submitter not in rows  # "us", as the bootstrap would pass its own id
    assert "12D3KooWstranger" not in rows  # junk from an unknown peer makes no node
    assert [rows[p]["reputation"] for p in ex[:3]] == [-10, 5, 5]
    assert [rows[p]["credits"] for p in ex[:3]] == [100, 101, 101]
    assert [rows[p]["jobs_run"] for p in ex[:3]] == [2, 2, 2]
    assert rows[ex[3]] == {"peer_id": ex[3], "online": True, "reputation": 0, "credits": 100, "jobs_run": 0,
                           "last_seen": None}
    assert [r["peer_id"] for r in stats.nodes_detail({ex[3]}, submitter)][0] == ex[3]  # online first
    jobs = [stats.jobs[j] for j in stats.order]
    assert [(j["status"], j["executors"], j["agreeing"], j["dissenting"], j["split"]) for j in jobs] == [
        ("verified", 3, 2, 1, 0), ("nondeterministic", 3, 0, 0, 3)]  # no two alike: no majority to dissent from
    assert all(j["submitter"] == submitter for j in jobs)


def chromium_path() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        missing("chromium is not installed (Debian package `chromium`; scripts/setup.sh installs it)")
    return path


class Chromium:
    """A headless Chromium in its own process group, killed (the whole group) by `close`."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def devtools_url(self) -> str:
        """The browser's DevTools websocket, read from the `DevTools listening on` line."""
        deadline = time.monotonic() + CHROMIUM_START_TIMEOUT_S
        while True:
            text = self.log.read_text(errors="replace")
            if m := re.search(r"DevTools listening on (ws://\S+)", text):
                return m.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start (exit code {self.proc.poll()}):\n{text[-3000:]}")
            time.sleep(0.05)  # the line appears once; each read is a fresh look at the log

    def close(self) -> None:
        pgid = self.proc.pid  # start_new_session: the group id is the browser's pid
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Renderer, zygote and utility processes share the group; none may outlive the test.
        deadline = time.monotonic() + 5
        while True:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium's process group {pgid} survived SIGKILL")
            time.sleep(0.05)


class Session:
    """DevTools commands to one page target, over the browser connection (flat sessions)."""

    def __init__(self, ws, session_id: str | None = None) -> None:
        self.ws, self.session_id = ws, session_id
        self.ids = itertools.count(1)

    async def send(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if self.session_id:
            msg["sessionId"] = self.session_id
        await self.ws.send_message(json.dumps(msg))
        with trio.fail_after(PAGE_TIMEOUT_S):
            while True:
                reply = json.loads(await self.ws.get_message())
                if reply.get("id") == msg_id:  # events and other replies are not ours
                    if "error" in reply:
                        raise AssertionError(f"{method} failed: {reply['error']}")
                    return reply.get("result", {})

    async def js(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_js(self, expression: str, what: str, timeout: float = PAGE_TIMEOUT_S):
        """Evaluate `expression` until it is truthy; fail naming `what` (and the page) at the deadline."""
        deadline = trio.current_time() + timeout
        # Until the navigation has committed, `document.body` may still be null: an expression
        # that throws then means "not yet", not a failure.
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:
            value = await self.js(guarded)
            if value:
                return value
            if trio.current_time() > deadline:
                text = await self.js("document.body ? document.body.innerText : '(no document body)'")
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; the page shows:\n{text}")
            await trio.sleep(0.1)  # the page re-renders every second; each check reads it afresh


@asynccontextmanager
async def open_page(url: str, tmp_path: Path):
    chromium = Chromium(chromium_path(), tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        ws_url = await trio.to_thread.run_sync(chromium.devtools_url)
        async with open_websocket_url(ws_url, max_message_size=64 * 1024 * 1024) as ws:
            browser = Session(ws)
            target = await browser.send("Target.createTarget", url="about:blank")
            attached = await browser.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            page = Session(ws, attached["sessionId"])
            await page.send("Page.enable")
            nav = await page.send("Page.navigate", url=url)
            assert not nav.get("errorText"), nav
            yield page
    finally:
        chromium.close()


def api_get(net: Devnet, path: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    return json.loads(opener.open(net.http_url + path, timeout=10).read())


def api_stats(net: Devnet) -> dict:
    return api_get(net, "/api/stats")


def text_of(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent"


async def screenshot(page: Session, name: str, width: int, height: int, full_page: bool) -> Path:
    """A PNG of the page at `width` x `height` CSS pixels (the whole page's height if `full_page`),
    saved in ARTIFACTS; its path is printed."""
    await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                    mobile=False)
    await page.js("new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)))")  # laid out
    await page.js("window.dispatchEvent(new Event('resize'))")  # the charts re-measure their boxes
    params: dict = {"format": "png"}
    if full_page:
        size = (await page.send("Page.getLayoutMetrics"))["cssContentSize"]
        params.update(captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1})
    png = base64.b64decode((await page.send("Page.captureScreenshot", **params))["data"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(png)
    print(f"screenshot: {path}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, (path, len(png))
    assert int.from_bytes(png[16:20], "big") == width, "the PNG is not as wide as asked"
    return path


async def open_job(page: Session, job_id: str) -> None:
    """Click the job's row; wait until the job view shows that job."""
    await page.js(f"document.querySelector('#jobs-body tr[data-job-id=\"{job_id}\"]').click()")
    await page.wait_js(f"document.getElementById('job-view').open && "
                       f"{text_of('#job-view .jv-id')} === {json.dumps(job_id)}", f"the job view of {job_id}")


@pytest.mark.slow
@pytest.mark.docker
async def test_stats_page_shows_jobs_live_explains_failures_and_draws_the_hour(tmp_path, docker_host):
    chromium_path()  # skip (or, under CI, fail) before starting a network for nothing
    job_file, missing_file = tmp_path / "job.json", tmp_path / "missing.json"
    job_file.write_text(json.dumps(DEMO_JOB))
    missing_file.write_text(json.dumps(MISSING_IMAGE_JOB))
    with Devnet(tmp_path / "net", nodes=3, sandbox="docker", docker_host=docker_host) as net:
        await trio.to_thread.run_sync(net.start)
        await trio.to_thread.run_sync(net.wait_connected)
        node_ids = [n["peer_id"] for n in net.node_info]
        async with open_page(net.http_url + "/", tmp_path) as page:
            # The page polls and renders before any job exists: every node listed, online.
            await page.wait_js("document.body.dataset.polls >= 1", "the page's first render")
            await page.wait_js(
                f"{json.dumps(node_ids)}.every(id => {{ const r = document.querySelector("
                f"'#nodes-body tr[data-peer-id=\"' + id + '\"]'); return r && r.innerText.includes('online'); }})",
                "the three nodes online in the nodes table")
            assert await page.js(text_of("#c-online")) == "3"
            assert await page.js(text_of("#c-online-sub")) == "of 3 nodes seen"
            assert await page.js(text_of("#bootstrap-id")) == api_stats(net)["peer_id"]
            assert await page.js(text_of("#c-failed-sub")) == "none so far"
            await page.js("window.__notReloaded = true")

            outcome, _ = await trio.to_thread.run_sync(submit_json, net.node_dirs[0], "-f", str(job_file))
            assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, outcome
            job_id = outcome["job_id"]
            row = f"document.querySelector('#jobs-body tr[data-job-id=\"{job_id}\"]')"
            await page.wait_js(f"{row} && {row}.innerText.includes('verified')",
                               f"job {job_id} shown verified in the recent jobs table")
            assert await page.js("window.__notReloaded === true"), "the page reloaded"
            assert job_id[:12] in await page.js("document.body.innerText")
            assert (await page.js(text_of("#jobs-note"))).startswith("1 job, newest first")

            # A stranger's job name is shown as text, never parsed as markup.
            assert await page.js(f"{row}.querySelector('.name').textContent") == HOSTILE_NAME
            assert await page.js("document.getElementById('pwned') === null")
            assert await page.js("document.querySelectorAll('#jobs-body img').length") == 0
            assert await page.js("document.title") == "DistributeAI bootstrap"

            # Counters and the ledger's fold, as the page got them from /api/stats.
            await page.wait_js(f"{text_of('#c-verified')} === '1'", "verified = 1")
            await page.wait_js(f"{text_of('#c-rate')} === '1'", "1 job per minute")
            stats = api_stats(net)
            assert stats["jobs_per_minute"] == {"certified": 1, "announced": 1}
            job = next(j for j in stats["recent_jobs"] if j["job_id"] == job_id)
            agreed = {e["peer_id"] for e in outcome["executors"] if e["agreed"]}
            assert job["status"] == "verified" and job["submitter"] == node_ids[0]
            # 2 or 3 awards: a bid that misses the window is not waited for when nobody outranks
            # the bids in hand.
            assert (job["executors"], job["agreeing"], job["dissenting"]) == (len(outcome["executors"]), len(agreed), 0)
            detail = {n["peer_id"]: n for n in stats["nodes_detail"]}
            assert stats["peer_id"] not in detail and set(node_ids) <= set(detail)
            for pid in node_ids:
                assert detail[pid]["online"] and detail[pid]["last_seen"] > 0
                assert detail[pid]["reputation"] == (5 if pid in agreed else 0)
                assert detail[pid]["jobs_run"] == (1 if pid in agreed else detail[pid]["jobs_run"]) <= 1
            assert sum(detail[pid]["jobs_run"] for pid in node_ids) == job["revealed"]
            assert sum(detail[pid]["credits"] for pid in node_ids) == 300  # paid among themselves
            assert detail[node_ids[0]]["credits"] == 100 - len(agreed - {node_ids[0]})
            await page.wait_js(
                f"{json.dumps(sorted(agreed))}.every(id => document.querySelector("
                f"'#nodes-body tr[data-peer-id=\"' + id + '\"]').innerText.includes('+5'))",
                "reputation +5 for the agreeing executors in the nodes table")

            # The job view: spec, every executor with its verdict, the timeline.
            await open_job(page, job_id)
            view = api_get(net, f"/api/jobs/{job_id}")
            assert await page.js(text_of("#job-view h2")) == HOSTILE_NAME
            assert await page.js("document.getElementById('pwned') === null")
            await page.wait_js(f"document.querySelectorAll('#job-view .v-agreed').length === {len(agreed)}",
                               "the agreeing executors in the job view")
            shown = await page.js("[...document.querySelectorAll('#job-view td.mono')].map(td => td.title)")
            assert set(e["peer_id"] for e in view["detail"]["executors"]) <= set(shown)
            assert 'sh -c "echo \'Hello\' | sha256sum"' in await page.js(text_of("#job-view dl.spec"))
            events = await page.js("[...document.querySelectorAll('#job-view ol.timeline li .e')].map(e => e.textContent)")
            assert events[0] == "announced" and events[-1] == "verified" and "awarded" in events, events
            assert events.count("bid") == len(view["detail"]["bids"]) >= len(agreed)
            paths = [await screenshot(page, "bootstrap-page-1280-verified-job.png", 1280, 800, full_page=False)]
            await page.js("document.getElementById('job-close').click()")
            await page.wait_js("!document.getElementById('job-view').open", "the job view closed")

            # A job no node can run fails with its reason, on the Failed card and in its view.
            failed, _ = await trio.to_thread.run_sync(submit_json, net.node_dirs[1], "-f", str(missing_file))
            assert failed["status"] == "failed", failed
            failed_id = failed["job_id"]
            await page.wait_js(f"{text_of('#c-failed')} === '1'", "failed = 1")
            stats = api_stats(net)
            reason = next(j for j in stats["recent_jobs"] if j["job_id"] == failed_id)["reason"]
            assert reason == "no bids: 3 nodes lack image nosuch:image", reason  # the certificate's, counted by kind
            assert stats["failure_reasons"] == [{"reason": reason, "count": 1}]
            await page.wait_js(f"{text_of('#c-failed-reasons li .t')} === {json.dumps(reason)}",
                               "the failure reason on the Failed card")
            assert await page.js(text_of("#c-failed-reasons li .n")) == "1\u00d7"
            assert (await page.js(text_of("#jobs-note"))).startswith("2 jobs, newest first")
            await open_job(page, failed_id)
            assert await page.js(text_of("#job-view .jv-reason span")) == reason
            declines = api_get(net, f"/api/jobs/{failed_id}")["detail"]["declines"]
            assert sorted(d["peer_id"] for d in declines) == sorted(node_ids)
            assert {d["code"] for d in declines} == {"image_missing"}
            await page.wait_js("document.querySelectorAll('#job-view .a-declined').length === 3",
                               "the three declines in the job view")
            view_text = await page.js("document.getElementById('job-view').innerText")
            assert all(d["detail"] in view_text for d in declines) and "image missing" in view_text
            events = await page.js("[...document.querySelectorAll('#job-view ol.timeline li .e')].map(e => e.textContent)")
            assert events == ["announced", "declined", "declined", "declined", "failed"], events

            # The last hour: two verdicts and two announcements drawn, a time to verdict each.
            hour = stats["last_hour"]
            assert (sum(hour["verified"]), sum(hour["failed"]), sum(hour["announced"])) == (1, 1, 2)
            assert sum(1 for v in hour["verdict_max_s"] if v is not None) >= 1
            assert await page.js("+document.querySelector('#chart-jobs svg').dataset.bars") >= 2
            assert await page.js("+document.querySelector('#chart-verdict svg').dataset.bars") >= 2
            assert await page.js(text_of("#chart-jobs-total")) == "2 verdicts, 2 announced"

            paths += [await screenshot(page, "bootstrap-page-1280-failed-job.png", 1280, 800, full_page=False),
                      await screenshot(page, "bootstrap-page-800-failed-job.png", 800, 1000, full_page=False)]
            await page.js("document.getElementById('job-close').click()")
            paths += [await screenshot(page, "bootstrap-page-1280.png", 1280, 800, full_page=True),
                      await screenshot(page, "bootstrap-page-800.png", 800, 1000, full_page=True)]
    assert all(p.stat().st_size > 20_000 for p in paths)
