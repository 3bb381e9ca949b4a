"""`codexw board` in a real browser (chromium through Playwright) against real jobs
(the fake codex), and its guard with plain HTTP requests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.board.conftest import Board, screenshot_to
from tests.conftest import Env, wait_until
from tests.faults.helpers import group_members, wait_running

pytestmark = pytest.mark.slow


def card(column: str, job_id: int) -> str:
    return f'[data-column="{column}"] [data-job="{job_id}"]'


def state_of(cx: Env, job_id: int) -> str:
    with cx.db() as conn:
        return str(conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])


def test_the_board_shows_jobs_in_their_columns_and_moves_a_card_live(
    cx: Env, board: Board, page: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # The first line is the task's head on its card; the fake codex obeys the @fake lines.
    ok = cx.launch("Summarise the repository layout and its tests\n@fake message Done:"
                   " **all good** <script>window.pwned=1</script> [x](javascript:window.pwned=2)")
    failed = cx.launch("Upgrade the HTTP client and fix what breaks\n@fake fail auth",
                       "--level", "high")
    chain = cx.launch("Survey retry libraries for asyncio\n@fake fail-first 1 429",
                      "--retries", "1", "--type", "research")
    cx.run("wait", str(ok["job_id"]), str(failed["job_id"]), str(chain["job_id"]))
    stopped = cx.launch("Rewrite the parser in Rust\n@fake sleep 60", "--level", "xhigh")
    wait_running(cx, stopped["job_id"])
    cx.ok("kill", str(stopped["job_id"]))
    running = cx.launch(f"Fix the flaky test in tests/test_io.py\n@fake events 2\n"
                        f"@fake sleep 1\n@fake wait-for {gate}", "--level", "medium")
    queued = cx.launch("Add tests for the new retry policy\n@fake message after",
                       "--after", str(running["job_id"]))
    wait_running(cx, running["job_id"])

    page.wait_for_selector(card("running", running["job_id"]))
    assert page.is_visible(card("succeeded", ok["job_id"]))
    assert page.is_visible(card("failed", failed["job_id"]))
    assert page.is_visible(card("stopped", stopped["job_id"]))
    assert page.is_visible(card("queued", queued["job_id"]))
    waiting = page.inner_text(card("queued", queued["job_id"]))
    assert f"waiting for job {running['job_id']}" in waiting
    assert page.locator("[data-column]").count() == 5
    assert page.locator("[data-job]").count() == 6
    # A retry chain is one card: its latest attempt, with n/m.
    latest = cx.job(chain["job_id"] + 1)
    assert latest["retry_of"] == chain["job_id"]
    assert page.locator(f'[data-job="{chain["job_id"]}"]').count() == 0
    assert "attempt 2/2" in page.inner_text(card("succeeded", latest["id"]))
    # The running job's latest action, as the runner records it.
    action = wait_until(lambda: cx.job(running["job_id"])["last_action"], what="an action")
    wait_until(lambda: action in page.inner_text(card("running", running["job_id"])),
               what="the running card's latest action")
    shot = tmp_path / "board.png"
    page.set_viewport_size({"width": 1500, "height": 330})
    page.screenshot(path=str(shot), full_page=True)
    page.set_viewport_size({"width": 1500, "height": 860})
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if (docs := screenshot_to("board.png")) is not None:
        shutil.copyfile(shot, docs)

    # The job ends: its card moves to Succeeded within a second, without a reload.
    page.evaluate("window.__same_page = true")
    gate.touch()
    wait_until(lambda: state_of(cx, running["job_id"]) == "succeeded", what="job ended")
    seen_final = time.monotonic()
    page.wait_for_selector(card("succeeded", running["job_id"]), timeout=1000)
    assert time.monotonic() - seen_final < 1.0
    assert page.evaluate("window.__same_page") is True
    page.wait_for_selector(card("succeeded", queued["job_id"]), timeout=30_000)

    # A card opens the job: the report rendered from Markdown, with what the agent
    # wrote shown as text, never run.
    page.click(card("succeeded", ok["job_id"]))
    page.wait_for_selector("#job-dialog[open] #job-report h1")
    report = page.locator("#job-report")
    assert report.locator("strong", has_text="all good").count() >= 1
    assert report.locator("script").count() == 0
    assert report.locator('a[href^="javascript"]').count() == 0
    assert "<script>window.pwned=1</script>" in report.inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("#job-log").inner_text() != ""
    opened = tmp_path / "board-job.png"
    page.screenshot(path=str(opened))
    if (docs := screenshot_to("board-job.png")) is not None:
        shutil.copyfile(opened, docs)
    page.keyboard.press("Escape")

    # Keyboard: Tab to a card, Enter opens it.
    page.locator(card("failed", failed["job_id"])).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#job-dialog[open]")
    assert "401" in page.inner_text("#job-meta")
    page.keyboard.press("Escape")

    # Readable in a narrow window: the columns stack, nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = [page.locator(f'[data-column="{c}"]').bounding_box() for c in ("queued", "running")]
    assert boxes[0]["y"] < boxes[1]["y"] and boxes[0]["x"] == boxes[1]["x"]
    if (docs := screenshot_to("board-narrow.png")) is not None:
        page.screenshot(path=str(docs))
    page.set_viewport_size({"width": 1500, "height": 860})

    # The stats view: plain SVG charts.
    page.click("#open-stats")
    page.wait_for_selector("#stats-dialog[open] svg.chart")
    assert page.locator("#stats-dialog svg.chart").count() == 3
    if (docs := screenshot_to("board-stats.png")) is not None:
        page.screenshot(path=str(docs))


def test_kill_from_the_card_stops_the_whole_process_tree(
    cx: Env, board: Board, page: Any
) -> None:
    job = cx.launch("@fake grandchild; @fake sleep 120")
    running = wait_running(cx, job["job_id"], also="grandchild")
    pgid = running["codex_pgid"]
    assert group_members(pgid)
    page.click(card("running", job["job_id"]))
    page.wait_for_selector("#job-dialog[open]")
    page.wait_for_selector("#job-procs-section:not([hidden])")  # its tree, CPU and RSS
    assert "runner" in page.inner_text("#job-procs")
    page.click("#job-kill")
    page.wait_for_selector(card("stopped", job["job_id"]))
    assert state_of(cx, job["job_id"]) == "killed"
    wait_until(lambda: not group_members(pgid), timeout=30, what="the codex group to be gone")
    # Retry from the same card: a new attempt, which the board shows in its place.
    page.wait_for_selector("#job-retry:not([disabled])")
    page.click("#job-retry")
    page.wait_for_selector("#flash.ok")
    retry = job["job_id"] + 1
    page.wait_for_selector(f'[data-job="{retry}"]')
    assert cx.job(retry)["retry_of"] == job["job_id"]
    cx.ok("kill", str(retry))


def test_the_launch_form_and_a_pasted_batch_start_jobs(cx: Env, board: Board, page: Any) -> None:
    page.click("#open-launch")
    page.fill("#l-task", "@fake message launched from the board")
    page.select_option("#l-level", "high")
    page.fill("#l-type", "research")
    page.fill("#l-notify", "desktop")
    page.click("#launch-form button[type=submit]")
    page.wait_for_selector("#flash.ok")
    with cx.db() as conn:
        row = conn.execute("SELECT id, level, type, cwd, notify FROM jobs").fetchone()
    assert (row["level"], row["type"], row["cwd"], row["notify"]) == (
        "high", "research", str(cx.project), '["desktop"]')
    page.wait_for_selector(card("succeeded", row["id"]))
    # Continue its conversation from its card.
    page.click(card("succeeded", row["id"]))
    page.wait_for_selector("#job-dialog[open]")
    page.fill("#continue-task", "@fake message followed up")
    page.click("#continue-form button[type=submit]")
    page.wait_for_selector("#flash.ok")
    follow = wait_until(lambda: cx.db().execute(
        "SELECT id, resume_of FROM jobs WHERE resume_of IS NOT NULL").fetchone(),
        what="the follow-up job")
    assert follow["resume_of"] == row["id"]
    page.wait_for_selector(card("succeeded", follow["id"]))
    page.wait_for_selector(f'#job-chain button:has-text("#{row["id"]}")')
    page.keyboard.press("Escape")
    # A bad value is refused with the CLI's own message, nothing recorded.
    page.click("#open-launch")
    page.fill("#l-task", "x")
    page.fill("#l-timeout", "soon")
    page.click("#launch-form button[type=submit]")
    page.wait_for_selector("#flash:not(.ok):not([hidden])")
    assert "timeout" in page.inner_text("#flash")
    page.keyboard.press("Escape")
    page.click("#open-batch")
    page.fill("#b-text", "@fake message one\n@fake message two\n")
    page.fill("#b-max", "1")
    page.click("#batch-form button[type=submit]")
    page.wait_for_selector("#flash.ok")
    wait_until(lambda: page.locator('[data-column="succeeded"] [data-job]').count() == 4,
               what="both batch jobs succeeded on the board")
    with cx.db() as conn:
        assert conn.execute("SELECT max_parallel FROM batches").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 4


def _request(board: Board, method: str, path: str, headers: dict[str, str] | None = None,
             body: dict[str, object] | None = None) -> tuple[int, str]:
    parts = urlsplit(board.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers={
            "Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_requests_without_the_token_from_another_origin_or_host_are_refused(
    cx: Env, board: Board
) -> None:
    token = board.token
    launch = {"task": "@fake message via http"}
    origin = {"Origin": board.base}
    assert _request(board, "GET", "/api/board")[0] == 403
    assert _request(board, "GET", "/api/board?token=wrong")[0] == 403
    assert _request(board, "GET", "/static/board.js")[0] == 403
    assert _request(board, "GET", f"/api/board?token={token}")[0] == 200
    # Another Host (DNS rebinding) is refused even with the token.
    assert _request(board, "GET", f"/api/board?token={token}",
                    {"Host": f"attacker.example:{urlsplit(board.base).port}"})[0] == 403
    # No cross-site POST: a foreign Origin, a missing one, a cross-site fetch.
    assert _request(board, "POST", f"/api/launch?token={token}",
                    {"Origin": "http://attacker.example"}, launch)[0] == 403
    assert _request(board, "POST", f"/api/launch?token={token}", {}, launch)[0] == 403
    assert _request(board, "POST", f"/api/launch?token={token}",
                    {**origin, "Sec-Fetch-Site": "cross-site"}, launch)[0] == 403
    assert _request(board, "POST", "/api/launch", origin, launch)[0] == 403
    assert not (cx.state / "codexw.db").exists() or not cx.db().execute(
        "SELECT 1 FROM jobs").fetchall()
    # The token's first use becomes a cookie (and leaves the address bar).
    status, _ = _request(board, "GET", f"/?token={token}")
    assert status == 303
    cookie = f"codexw_board_{urlsplit(board.base).port}={token}"
    status, text = _request(board, "POST", "/api/launch", {**origin, "Cookie": cookie}, launch)
    assert status == 200, text
    job_id = json.loads(text)["job_id"]
    cx.ok("wait", str(job_id))
    # A usage error is the CLI's one-line message, as JSON.
    status, text = _request(board, "POST", "/api/launch", {**origin, "Cookie": cookie},
                            {"task": "x", "level": "extreme"})
    assert status == 400 and "unknown level" in json.loads(text)["error"]
    assert os.path.exists(cx.state / "codexw.db")


def test_an_idle_board_with_a_page_listening_uses_almost_no_cpu(cx: Env, board: Board) -> None:
    """Live updates come from the registry's change notifications, not a polling loop:
    with nothing happening, an open event stream costs the board (almost) nothing."""
    from tests.faults.test_idle import CPU_BOUND_S, WINDOW_S, cpu_seconds

    job = cx.launch("@fake message idle")
    cx.ok("wait", str(job["job_id"]))
    parts = urlsplit(board.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"/api/events?token={board.token}")
        response = conn.getresponse()
        assert response.status == 200
        first = response.readline()  # the board as it is now
        assert first.startswith(b"event: board")
        assert f'"id": {job["job_id"]}'.encode() in response.readline()
        before = cpu_seconds(board.proc.pid)
        assert conn.sock is not None
        conn.sock.settimeout(WINDOW_S)
        deadline = time.monotonic() + WINDOW_S
        events = 0
        while time.monotonic() < deadline:
            try:
                line = response.readline()
            except TimeoutError:
                break
            events += line.startswith(b"event:")
        used = cpu_seconds(board.proc.pid) - before
    finally:
        conn.close()
    assert used < CPU_BOUND_S, f"idle board used {used:.2f} s of CPU in {WINDOW_S} s"
    assert events <= 1  # at most the safety refresh (every 5 s), nothing per second
