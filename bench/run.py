#!/usr/bin/env python3
"""codexw benchmarks: each figure next to a reference measured in the same run.

    python bench/run.py            # full counts, prints a Markdown table
    python bench/run.py --quick    # small counts (CI runs this so the benchmarks never rot)
    python bench/run.py --only launch,wait
    python bench/run.py --only cleanup --rounds 5

Absolute times on shared machines are noise; the ratio to the peer is the figure.
Everything runs under a temp dir with a fake codex (tests/fakes/fake_codex.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "fakes" / "fake_codex.py"
PY = sys.executable


@dataclass
class Row:
    what: str
    codexw: str
    reference: str
    ratio: str
    target: str
    verdict: str


class Sandbox:
    """A temp state dir, project and fake codex; removed at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codexw-bench-"))
        self.state = self.root / "state"
        self.project = self.root / "project"
        (self.project / ".git").mkdir(parents=True)
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        self.codex = bin_dir / "codex"
        self.codex.write_text(
            f"#!{PY}\nimport runpy, sys\nrunpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
        )
        self.codex.chmod(0o755)
        config = self.root / "config"
        config.mkdir()
        (config / "config.toml").write_text("")
        # Like a pip install, use compiled bytecode (PYTHONDONTWRITEBYTECODE would make
        # every run recompile codexw while typer, the reference, loads its .pyc files).
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("CODEXW_", "FAKE_CODEX")) and k != "PYTHONDONTWRITEBYTECODE"},
            "CODEXW_STATE_DIR": str(self.state),
            "CODEXW_CONFIG_DIR": str(config),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "NO_COLOR": "1",
        }

    def codexw(self, *args: str, check: bool = True, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([PY, "-m", "codexw", *args], cwd=self.project, env=self.env,
                              capture_output=True, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"codexw {' '.join(args)}: {proc.stderr.decode()}{proc.stdout.decode()[-2000:]}")
        return proc

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


# -- benchmarks -------------------------------------------------------------------------


def bench_launch(n: int) -> Row:
    box = Sandbox()
    try:
        box.codexw("status")  # create the registry, check the template once
        launch, typer_import = [], []
        for i in range(n):
            typer_import.append(timed(lambda: subprocess.run([PY, "-c", "import typer"], check=True)))
            launch.append(timed(lambda i=i: box.codexw("launch", f"bench task {i}")))
            box.codexw("wait", str(i + 1))  # not timed: keep runners off the next sample
        ratio = median(launch) / median(typer_import)
        return Row(f"`launch` wall, median of {n}", ms(median(launch)),
                   f"{ms(median(typer_import))} (`python -c 'import typer'`)", f"{ratio:.2f}×",
                   "≤ 1.25×", verdict(ratio <= 1.25))
    finally:
        box.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_runner_rss() -> Row:
    box = Sandbox()
    try:
        out = box.codexw("launch", "--json", "@fake sleep 4")
        job_id = json.loads(out.stdout)["job_id"]
        db = sqlite3.connect(box.state / "codexw.db")
        deadline = time.monotonic() + 30
        pid = None
        while time.monotonic() < deadline:
            row = db.execute("SELECT state, runner_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row[0] == "running":
                pid = row[1]
                break
            time.sleep(0.05)
        assert pid, "the job never ran"
        time.sleep(1.0)  # let the runner settle into its read loop
        runner = _rss_kb(pid)
        peer = subprocess.Popen([PY, "-c", "import sqlite3, json, subprocess, sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)
        time.sleep(0.5)
        reference = _rss_kb(peer.pid)
        peer.communicate(b"")
        box.codexw("wait", str(job_id))
        return Row("runner RSS while codex runs", f"{runner / 1024:.1f} MB",
                   f"{reference / 1024:.1f} MB (python + sqlite3, json, subprocess)",
                   f"{runner / reference:.2f}×", "≤ 16 MB", verdict(runner / 1024 <= 16))
    finally:
        box.close()


def bench_wait(n: int) -> Row:
    box = Sandbox()
    try:
        ours, polling = [], []
        poll_code = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1])\n"
            "while db.execute('SELECT state FROM jobs WHERE id = ?', (int(sys.argv[2]),)).fetchone()[0]"
            " not in ('succeeded', 'failed', 'timed_out', 'killed', 'lost', 'cancelled'):\n"
            "    time.sleep(1)\n"
        )
        db = sqlite3.connect(box.state / "codexw.db") if (box.state / "codexw.db").exists() else None
        for _ in range(n):
            job_id = json.loads(box.codexw("launch", "--json", "@fake sleep 1.3").stdout)["job_id"]
            waiter = subprocess.Popen([PY, "-m", "codexw", "wait", "-q", str(job_id)],
                                      cwd=box.project, env=box.env)
            poller = subprocess.Popen([PY, "-c", poll_code, str(box.state / "codexw.db"), str(job_id)])
            waiter.wait()
            ours_end = time.time()
            poller.wait()
            poll_end = time.time()
            db = db or sqlite3.connect(box.state / "codexw.db")
            ended = db.execute("SELECT ended_at FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            ours.append(ours_end - ended)
            polling.append(poll_end - ended)
        return Row(f"`wait` wake-up after the job ends, n={n}",
                   f"median {ms(median(ours))}, p95 {ms(p95(ours))}",
                   f"median {ms(median(polling))} (1 s polling loop)",
                   f"{median(ours) / median(polling):.2f}×", "median ≤ 50 ms",
                   verdict(median(ours) <= 0.05))
    finally:
        box.close()


def bench_batch(n: int) -> Row:
    if shutil.which("parallel") is None:
        return Row(f"`batch` of {n} instant jobs at -j 4", "-", "GNU parallel not installed", "-",
                   "≤ 1.5×", "not measured")
    box = Sandbox()
    try:
        tasks = box.root / "tasks.txt"
        tasks.write_text("".join(f"instant task {i}\n" for i in range(n)))
        box.codexw("status")
        ours = timed(lambda: box.codexw("batch", str(tasks), "-j", "4"))
        work = box.root / "parallel"
        work.mkdir()
        # The same fake codex, the same argv shape, the prompt on stdin.
        reference = timed(lambda: subprocess.run(
            ["parallel", "-j", "4", "--will-cite", "echo instant task {} | " + str(box.codex)
             + " exec --json -C " + str(work) + " - > /dev/null", ":::", *map(str, range(n))],
            check=True, env=box.env))
        ratio = ours / reference
        return Row(f"`batch` of {n} instant jobs at -j 4, wall", f"{ours:.2f} s",
                   f"{reference:.2f} s (GNU parallel, same fake codex)", f"{ratio:.2f}×", "≤ 1.5×",
                   verdict(ratio <= 1.5))
    finally:
        box.close()


def _fill_registry(box: Sandbox, count: int) -> None:
    """Insert `count` finished jobs through the store (no runs)."""
    env_before = os.environ.get("CODEXW_STATE_DIR")
    os.environ["CODEXW_STATE_DIR"] = str(box.state)
    try:
        sys.path.insert(0, str(REPO))
        from codexw.core.models import JobSpec, JobState
        from codexw.core.store import Store

        store = Store.open()
        now = time.time()
        levels = ["minimal", "low", "medium", "high", "xhigh"]
        with store.transaction(notify_waiters=False):
            for i in range(count):
                spec = JobSpec(task=f"task {i}", level=levels[i % 5], type="workers" if i % 3 else "research",
                               cwd=str(box.project), project=str(box.project), codex_bin="codex")
                job_id = store.insert_job(spec, now=now - count + i)
                store.finish(job_id, JobState.SUCCEEDED if i % 7 else JobState.FAILED,
                             ended_at=now - count + i + 30, exit_code=0,
                             tokens={"input_tokens": 100, "output_tokens": 20})
                store.conn.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (now - count + i, job_id))
        store.close()
    finally:
        if env_before is None:
            os.environ.pop("CODEXW_STATE_DIR", None)
        else:
            os.environ["CODEXW_STATE_DIR"] = env_before


def bench_status(count: int, reps: int) -> list[Row]:
    box = Sandbox()
    try:
        _fill_registry(box, count)
        version = [timed(lambda: box.codexw("--version")) for _ in range(reps)]
        latest = [timed(lambda: box.codexw("status", "--latest", "20")) for _ in range(reps)]
        rows = [Row(f"`status --latest 20`, {count:,} jobs", ms(median(latest)),
                    f"{ms(median(version))} (`codexw --version`)",
                    f"{median(latest) / median(version):.2f}×", "≤ 1.5×",
                    verdict(median(latest) / median(version) <= 1.5))]
        probe = box.codexw("status", "--stats", check=False)
        if probe.returncode == 0:
            stats = [timed(lambda: box.codexw("status", "--stats")) for _ in range(reps)]
            ratio = median(stats) / median(version)
            rows.append(Row(f"`status --stats`, {count:,} jobs", ms(median(stats)),
                            f"{ms(median(version))} (`codexw --version`)", f"{ratio:.2f}×", "≤ 3×",
                            verdict(ratio <= 3)))
        else:
            rows.append(Row(f"`status --stats`, {count:,} jobs", "-", "-", "-", "≤ 3×",
                            "not available: " + probe.stderr.decode().strip()[:60]))
        return rows
    finally:
        box.close()


def _gzip_mv_sync(folder: Path, dest: Path, sync: str) -> list[list[str]]:
    """The seed's way, as argv lists (no shell): gzip every report in place, move the
    .gz files into archive/YYYY-MM/, make it durable (`sync -f`: syncfs of that
    filesystem, what cleanup does; `sync`: every filesystem, the seed's own)."""
    return [
        ["find", str(folder), "-name", "*_codex_task.md", "-exec", "gzip", "{}", "+"],
        ["mkdir", "-p", str(dest)],
        ["find", str(folder), "-name", "*_codex_task.md.gz", "-exec", "mv", "-t", str(dest),
         "{}", "+"],
        ["sync", "-f", str(dest)] if sync == "fs" else ["sync"],
    ]


def _cleanup_round(count: int, ours_first: bool, sync: str, settle: float) -> tuple[float, float]:
    """One side-by-side run on fresh files: (codexw's seconds, the reference's)."""
    box = Sandbox()
    try:
        _fill_registry(box, count)
        db = sqlite3.connect(box.state / "codexw.db")
        folder = box.project / ".codexw" / "workers"
        folder.mkdir(parents=True)
        body = "# Worker Task Report\n\n" + ("Some findings and a list of files.\n" * 40)
        rows = db.execute("SELECT id FROM jobs").fetchall()
        with db:
            for (job_id,) in rows:
                path = folder / f"20260101_000000_{100000 + job_id}_codex_task.md"
                path.write_text(body)
                # Ended over a minute ago: cleanup leaves younger ones alone, the peer would not.
                db.execute("UPDATE jobs SET report_path = ?, type = 'workers',"
                           " ended_at = ended_at - 120 WHERE id = ?", (str(path), job_id))
        db.close()
        peer = box.root / "peer" / ".codexw"
        shutil.copytree(folder, peer / "workers")
        dest = peer / "archive" / time.strftime("%Y-%m") / "workers"

        steps: list[float] = []

        def reference() -> float:
            for argv in _gzip_mv_sync(peer / "workers", dest, sync):
                steps.append(timed(lambda argv=argv: subprocess.run(argv, check=True)))
            return sum(steps)

        def ours() -> float:
            return timed(lambda: box.codexw("cleanup", "--age", "0", "--quiet"))

        # Neither side pays for the other's writes (nor for the set-up's): everything is
        # on disk, and (see docs/benchmarks.md) the inodes the first side freed are
        # reusable again, before each side starts.
        first, second = (ours, reference) if ours_first else (reference, ours)
        subprocess.run(["sync"], check=True)
        time.sleep(settle)
        a = first()
        subprocess.run(["sync"], check=True)
        time.sleep(settle)
        b = second()
        left = sum(1 for _ in folder.iterdir())
        if left:
            raise RuntimeError(f"cleanup left {left} reports in {folder}")
        print(f"  reference: gzip {steps[0]:.2f} s, mv {steps[2]:.2f} s, sync {steps[3]:.2f} s",
              file=sys.stderr, flush=True)
        return (a, b) if ours_first else (b, a)
    finally:
        box.close()


# ext4 without a journal skips, when it allocates an inode, every inode freed in the
# last 5 seconds (RECENTCY_MIN in fs/ext4/ialloc.c): wait that long between the sides.
SETTLE_S = 6.0


def bench_cleanup(count: int, rounds: int, sync: str, settle: float = SETTLE_S) -> Row:
    probe = Sandbox()
    try:
        if probe.codexw("cleanup", "--help", check=False).returncode != 0:
            return Row(f"`cleanup --age 0`, {count:,} reports", "-", "-", "-", "≤ 1.0×",
                       "not available")
    finally:
        probe.close()
    ours, reference, ratios = [], [], []
    for n in range(rounds):
        a, b = _cleanup_round(count, ours_first=n % 2 == 1, sync=sync, settle=settle)
        ours.append(a)
        reference.append(b)
        ratios.append(a / b)
        print(f"  cleanup round {n + 1}/{rounds}: {a:.2f} s vs {b:.2f} s → {a / b:.2f}×",
              file=sys.stderr, flush=True)
    ratio = median(ratios)
    said = "sync -f" if sync == "fs" else "sync"
    spread = f" (min {min(ratios):.2f}×, {rounds} rounds)" if rounds > 1 else ""
    return Row(f"`cleanup --age 0`, {count:,} finished reports", f"{median(ours):.2f} s",
               f"{median(reference):.2f} s (`find -exec gzip`, `mv` to archive/YYYY-MM/,"
               f" `{said}`)", f"{ratio:.2f}×{spread}", "≤ 1.0×", verdict(ratio <= 1.0))


# -- codex's own processes: the native binary against the npm wrapper -------------------


def _real_codex() -> str | None:
    path = os.environ.get("CODEXW_E2E_CODEX") or str(REPO / ".cache/codex/node_modules/.bin/codex")
    return path if os.access(path, os.X_OK) else None


def _pss_kb(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _group(pgid: int) -> set[int]:
    members = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.add(int(name))
    return members


def _tree(root: int) -> set[int]:
    """`root` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cpu_s(pid: int) -> float:
    """utime + stime of `pid` and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass
class CodexRound:
    pss_mb: float  # every process serving the jobs, while all wait on the model
    slowest_start: float  # the slowest spawn (or pick-up) → first model request, s
    cpu_s: float = 0.0  # codex's processes, whole lifetime (plain and app-server rounds)
    follow_up: float = 0.0  # a follow-up: spawn (or pick-up) → its model request, s


def _codex_round(codex: str, jobs: int, how: str) -> CodexRound:
    """`jobs` concurrent jobs held at the mock model until all wait on it. `how`: "plain"
    (`codex exec` through the npm wrapper, no codexw), "native" or "wrapper" (codexw with
    codex_native = true / false) or "app-server" (codexw --backend app-server)."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.conftest import PROVIDER_CONFIG
    from tests.e2e.mock_responses import Message, MockResponses

    box = Sandbox()
    server = MockResponses().start()
    procs: list[subprocess.Popen[bytes]] = []
    supervisor = 0
    try:
        shutil.rmtree(box.project / ".git")  # codex wants a real repository
        subprocess.run(["git", "init", "-q", str(box.project)], check=True)
        home = box.root / "codex-home"
        home.mkdir()
        (home / "config.toml").write_text(PROVIDER_CONFIG.format(base_url=server.base_url))
        server.default = Message("held", hold=120)
        env = {**box.env, "CODEX_HOME": str(home), "MOCK_API_KEY": "bench",
               "HOME": str(box.root), "CODEXW_CODEX_BIN": codex,
               "CODEXW_CODEX_NATIVE": "false" if how == "wrapper" else "true",
               "CODEXW_BACKEND": "app-server" if how == "app-server" else "local",
               "CODEXW_APP_SERVER_IDLE": "5m"}
        spawned: list[float] = []
        result = CodexRound(0.0, 0.0)
        if how == "plain":
            outs = [box.root / f"plain-{i}.jsonl" for i in range(jobs)]
            for i in range(jobs):
                spawned.append(time.time())
                with outs[i].open("wb") as out:
                    procs.append(subprocess.Popen(
                        [codex, "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write",
                         "-C", str(box.project), f"bench task {i}"],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
                        env=env, start_new_session=True))
            server.wait_in_flight(jobs, timeout=120)
            pids = set().union(*(_group(p.pid) for p in procs))
        else:
            tasks = box.root / "tasks.txt"
            tasks.write_text("".join(f"bench task {i}\n" for i in range(jobs)))
            box.env = env
            box.codexw("batch", "--detach", "-j", str(jobs), str(tasks))
            server.wait_in_flight(jobs, timeout=120)
            rows = json.loads(box.codexw("status", "--json", "--all").stdout)["jobs"]
            spawned = [r["started_at"] for r in rows]
            if how == "app-server":
                supervisor = rows[0]["runner_pid"]
                pids = _tree(supervisor)
            else:
                pids = {r["runner_pid"] for r in rows}.union(*(_group(r["codex_pgid"]) for r in rows))
        result.pss_mb = _pss_kb(pids) / 1024
        first = sorted(r.started for r in server.requests)[:jobs]
        result.slowest_start = max(f - s for f, s in zip(first, sorted(spawned), strict=True))
        server.release()
        if how == "plain":
            for proc in procs:
                _, _, usage = os.wait4(proc.pid, 0)
                proc.returncode = 0
                result.cpu_s += usage.ru_utime + usage.ru_stime
            thread = json.loads(outs[0].read_text().splitlines()[0])["thread_id"]
            seen = len(server.requests)
            start = time.time()
            subprocess.run([codex, "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write",
                            "-C", str(box.project), "resume", thread, "follow-up"],
                           stdin=subprocess.DEVNULL, capture_output=True, env=env, check=True)
            result.follow_up = server.requests[seen].started - start
        else:
            box.codexw("wait", "--all", check=False)
        if how == "app-server":
            server_pid = json.loads(box.codexw("status", "--json", "1").stdout)["job"]["codex_pgid"]
            result.cpu_s = _cpu_s(server_pid)
            seen = len(server.requests)
            follow = json.loads(box.codexw("continue", "--json", "1", "follow-up").stdout)
            box.codexw("wait", str(follow["job_id"]))
            started = json.loads(box.codexw("status", "--json", str(follow["job_id"])).stdout)["job"]["started_at"]
            result.follow_up = server.requests[seen].started - started
        return result
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        if supervisor:
            os.kill(supervisor, 15)  # it stops its app-server and leaves
            deadline = time.monotonic() + 30
            while Path(f"/proc/{supervisor}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        server.stop()
        box.close()


def bench_codex_processes(jobs: int) -> list[Row]:
    codex = _real_codex()
    if codex is None:
        return [Row(f"{jobs} concurrent jobs: PSS, spawn → first request", "-",
                    "the real codex is not installed (CODEXW_E2E_CODEX)", "-", "-", "skipped")]
    plain = _codex_round(codex, jobs, "plain")
    native = _codex_round(codex, jobs, "native")
    wrapper = _codex_round(codex, jobs, "wrapper")
    app = _codex_round(codex, jobs, "app-server")
    ratio = native.pss_mb / plain.pss_mb
    start_ratio = native.slowest_start / wrapper.slowest_start
    app_ratio = app.pss_mb / plain.pss_mb
    cpu_ratio = app.cpu_s / plain.cpu_s
    follow_ratio = app.follow_up / plain.follow_up
    return [
        Row(f"{jobs} concurrent jobs, total PSS of codexw's and codex's processes",
            f"{native.pss_mb:.0f} MB (native codex); {wrapper.pss_mb:.0f} MB with codex_native = false",
            f"{plain.pss_mb:.0f} MB (plain `codex exec` through the npm wrapper)",
            f"{ratio:.2f}×", "≤ 1.0×", verdict(ratio <= 1.0)),
        Row(f"{jobs} concurrent jobs, slowest codex spawn → first model request",
            f"{ms(native.slowest_start)} (native)", f"{ms(wrapper.slowest_start)} (npm wrapper,"
            f" through codexw); {ms(plain.slowest_start)} plain", f"{start_ratio:.2f}×", "< 1×",
            verdict(start_ratio < 1)),
        Row(f"{jobs} concurrent jobs, total PSS, `--backend app-server`",
            f"{app.pss_mb:.0f} MB (supervisor + app-server)",
            f"{plain.pss_mb:.0f} MB (plain `codex exec` through the npm wrapper)",
            f"{app_ratio:.2f}×", "≤ 0.55×", verdict(app_ratio <= 0.55)),
        Row(f"{jobs} concurrent jobs, CPU time of codex's processes, `--backend app-server`",
            f"{app.cpu_s:.2f} s (the app-server, start to idle)",
            f"{plain.cpu_s:.2f} s (plain `codex exec` through the npm wrapper)",
            f"{cpu_ratio:.2f}×", "≤ 0.5×", verdict(cpu_ratio <= 0.5)),
        Row("follow-up: pick-up → first model request, `--backend app-server`",
            f"{ms(app.follow_up)} (a new turn on the loaded thread)",
            f"{ms(plain.follow_up)} (`codex exec resume` spawned)",
            f"{follow_ratio:.2f}×", "≤ 0.3×", verdict(follow_ratio <= 0.3)),
    ]


def _limited_batch(n: int, hold: float, adaptive: bool, config: str) -> tuple[float, int, int]:
    """A batch of `n` jobs at -j 6 against a model server that takes 2 streams at once
    (429 above): (wall seconds, 429s the server sent, attempts the batch used)."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.mock_responses import Message, MockResponses

    box = Sandbox()
    try:
        (box.root / "config" / "config.toml").write_text(
            config + f"adaptive = {'true' if adaptive else 'false'}\n")
        tasks = box.root / "tasks.txt"
        tasks.write_text("".join(f"@fake http ;limited task {i}\n" for i in range(n)))
        box.codexw("status")
        with MockResponses() as server:
            server.limit_in_flight = 2
            server.default = Message("done", hold=hold)
            box.env["FAKE_CODEX_BASE_URL"] = server.base_url
            wall = timed(lambda: box.codexw("batch", str(tasks), "-j", "6", "--retries", "5"))
            rejected = server.rejected
        db = sqlite3.connect(box.state / "codexw.db")
        attempts = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        db.close()
        return wall, rejected, attempts
    finally:
        box.close()


def bench_rate_limit(n: int, hold: float, config: str) -> Row:
    """The same batch against the same limited server, adaptive concurrency on and off."""
    wall, limited, attempts = _limited_batch(n, hold, True, config)
    ref_wall, ref_limited, ref_attempts = _limited_batch(n, hold, False, config)
    fewer = limited / ref_limited if ref_limited else 0.0
    faster = wall / ref_wall
    return Row(f"`batch` of {n} jobs ({hold:g} s each) at -j 6 against 2 streams: 429s, wall,"
               " attempts", f"{limited}, {wall:.1f} s, {attempts}",
               f"{ref_limited}, {ref_wall:.1f} s, {ref_attempts} (`adaptive = false`)",
               f"{fewer:.2f}× 429s, {faster:.2f}× wall", "≤ 0.33× 429s, ≤ 0.6× wall",
               verdict(fewer <= 1 / 3 and faster <= 0.6))


def compile_codexw() -> None:
    import compileall

    compileall.compile_dir(str(REPO / "codexw"), quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for CI")
    parser.add_argument("--only", help="comma-separated: launch,rss,wait,batch,ratelimit,status,codex,cleanup")
    parser.add_argument("--rounds", type=int, help="cleanup: side-by-side rounds, the order"
                        " alternating (default 3, 1 with --quick); the ratio is their median")
    parser.add_argument("--sync", choices=("fs", "all"), default="fs",
                        help="cleanup: the reference ends with `sync -f DIR` (fs, default: the"
                        " syncfs cleanup does) or `sync` (all, the seed's)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    q = args.quick
    plan: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("launch", lambda: bench_launch(5 if q else 30)),
        ("rss", bench_runner_rss),
        ("wait", lambda: bench_wait(3 if q else 15)),
        ("batch", lambda: bench_batch(20 if q else 200)),
        ("ratelimit", lambda: bench_rate_limit(6 if q else 10, 0.3 if q else 2.0,
                                               'backoff_base = "1s"\n' if q else "")),
        ("status", lambda: bench_status(2_000 if q else 100_000, 3 if q else 10)),
        ("codex", lambda: bench_codex_processes(8)),
        ("cleanup", lambda: bench_cleanup(300 if q else 10_000,
                                          args.rounds or (1 if q else 3), args.sync,
                                          0.0 if q else SETTLE_S)),
    ]
    compile_codexw()
    rows: list[Row] = []
    for name, fn in plan:
        if only and name not in only:
            continue
        result = fn()
        rows.extend(result if isinstance(result, list) else [result])
        last = rows[-1]
        print(f"{last.what}: {last.codexw} vs {last.reference} → {last.ratio} ({last.verdict})",
              file=sys.stderr, flush=True)
    import platform

    print(f"\n{time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · "
          f"{os.cpu_count()} CPUs · {'quick' if q else 'full'} run\n")
    print("| what | codexw | reference (same run) | ratio | target | |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.what} | {r.codexw} | {r.reference} | {r.ratio} | {r.target} | {r.verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
