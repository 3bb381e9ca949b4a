"""cleanup with real runs of the fake codex: archive, compress, delete, and the cron safety rules.

Ages are set by recording old end times in the registry, never by sleeping.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Env, processes_with_env, wait_until

DAY = 86400.0


# -- helpers ------------------------------------------------------------------------------


def run_jobs(cx: Env, tasks: list[str], *args: str) -> list[dict]:
    """Run tasks as one detached batch, wait for all, let their runners exit."""
    out = cx.ok("batch", "-", "--detach", "--json", *args, input="\n".join(tasks) + "\n")
    batch = json.loads(out.stdout)
    cx.run("wait", "--batch", str(batch["batch_id"]))
    settle(cx)
    return [cx.job(i) for i in batch["job_ids"]]


def settle(cx: Env) -> None:
    marker = f"CODEXW_STATE_DIR={cx.state}"
    wait_until(lambda: not processes_with_env(marker), what="runners to exit")


def age(cx: Env, job_ids: list[int], days: float) -> None:
    """Pretend these jobs ran `days` ago (start and end move together)."""
    with cx.db() as db:
        db.executemany(
            "UPDATE jobs SET ended_at = ended_at - ?, started_at = started_at - ? WHERE id = ?",
            [(days * DAY, days * DAY, i) for i in job_ids],
        )
    db.close()


def cleanup(cx: Env, *args: str, cwd: Path | None = None) -> dict:
    out = cx.ok("cleanup", "--json", *args, cwd=cwd)
    data = json.loads(out.stdout)
    assert data["command"] == "cleanup" and data["version"] == 1
    return data


def archive_path(cx: Env, job: dict) -> Path:
    ended = cx.db().execute("SELECT ended_at FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0]
    month = time.strftime("%Y-%m", time.localtime(ended))
    name = Path(job["report_path"]).name
    return cx.project / ".codexw" / "archive" / month / job["type"] / (name + ".gz")


def tree(*roots: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under `roots` (not following links): mode, mtime and content."""
    found = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if name in skip:
                    continue
                st = path.lstat()
                data = b""
                if stat.S_ISREG(st.st_mode):
                    data = path.read_bytes()
                elif stat.S_ISLNK(st.st_mode):
                    data = os.readlink(path).encode()
                found[str(path)] = (st.st_mode, st.st_mtime_ns if not stat.S_ISDIR(st.st_mode)
                                    else 0, data)
    return found


def registry(cx: Env) -> list[tuple]:
    db = cx.db()
    try:
        return [tuple(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        db.close()


def gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as fh:
        return fh.read()


# -- archive, compress, keep, delete ------------------------------------------------------


def test_old_reports_are_archived_and_status_and_logs_still_find_them(cx: Env) -> None:
    old, new = run_jobs(cx, ["@fake message old work done", "recent work"])
    original = Path(old["report_path"])
    text, mtime = original.read_bytes(), original.stat().st_mtime_ns
    age(cx, [old["id"]], 10)

    data = cleanup(cx, "--age", "7")

    target = archive_path(cx, old)
    assert data["archived"] == 1 and data["ok"] and data["errors"] == []
    assert not original.exists() and gunzip(target) == text
    assert target.stat().st_mtime_ns == mtime
    assert Path(new["report_path"]).exists()  # younger than 7 days: untouched
    job = cx.job(old["id"])
    assert job["report_path"] == str(target)
    assert job["log_path"].endswith(".jsonl.gz") and Path(job["log_path"]).exists()
    assert not (cx.state / "logs" / f"{old['id']}.jsonl").exists()
    assert (cx.state / "logs" / f"{new['id']}.jsonl").exists()
    assert "old work done" in cx.ok("logs", str(old["id"])).stdout
    assert "old work done" in cx.ok("logs", str(old["id"]), "-f").stdout
    assert ".codexw/archive/" in cx.ok("status").stdout
    assert data["bytes_before"] > 0 and data["freed"] == data["bytes_before"] - data["bytes_after"]
    # Nothing left to do: a second run is a no-op.
    again = cleanup(cx, "--age", "7")
    assert again["archived"] == again["compressed"] == again["deleted"] == 0


def test_ages_take_hours_days_or_a_bare_number_of_days(cx: Env) -> None:
    (job,) = run_jobs(cx, ["x"])
    age(cx, [job["id"]], 40 / 24)  # ended 40 hours ago
    assert cleanup(cx, "--dry-run", "--age", "2")["archived"] == 0
    assert cleanup(cx, "--dry-run", "--age", "2d")["archived"] == 0
    assert cleanup(cx, "--dry-run", "--age", "36h")["archived"] == 1
    assert cleanup(cx, "--dry-run", "--age", "1.5")["archived"] == 1
    bad = cx.run("cleanup", "--age", "soon")
    assert bad.returncode == 2 and "invalid age" in bad.stderr


def test_compress_only_gzips_reports_and_logs_in_place(cx: Env) -> None:
    (job,) = run_jobs(cx, ["x"])
    report = Path(job["report_path"])
    text = report.read_bytes()
    age(cx, [job["id"]], 3)
    data = cleanup(cx, "--compress-only", "--age", "2")
    assert data["compressed"] == 4  # the report and three logs
    packed = report.with_name(report.name + ".gz")
    assert not report.exists() and gunzip(packed) == text
    assert not (cx.project / ".codexw" / "archive").exists()
    assert cx.job(job["id"])["report_path"] == str(packed)
    assert sorted(p.name for p in (cx.state / "logs").iterdir()) == [
        f"{job['id']}.jsonl.gz", f"{job['id']}.runner.log.gz", f"{job['id']}.stderr.log.gz",
    ]
    # A later archive run moves the compressed report as it is.
    data = cleanup(cx, "--age", "2")
    assert data["archived"] == 1 and gunzip(archive_path(cx, job)) == text


def test_keep_newest_n_of_a_type_archives_the_rest(cx: Env) -> None:
    research = run_jobs(cx, [f"topic {i}" for i in range(4)], "--type", "research")
    (worker,) = run_jobs(cx, ["w"])
    for n, job in enumerate(research):  # the first ran longest ago
        age(cx, [job["id"]], 4 - n)
    age(cx, [worker["id"]], 30)

    data = cleanup(cx, "--keep", "2", "--type", "research")

    assert data["archived"] == 2
    assert [Path(cx.job(j["id"])["report_path"]).exists() for j in research] == [True] * 4
    assert [".codexw/archive/" in cx.job(j["id"])["report_path"] for j in research] == [
        True, True, False, False,
    ]
    assert cx.job(worker["id"])["report_path"] == worker["report_path"]  # other type: untouched


def test_delete_archives_older_removes_archives_and_compressed_logs(cx: Env) -> None:
    old, young = run_jobs(cx, ["a", "b"])
    age(cx, [old["id"]], 200)
    age(cx, [young["id"]], 20)
    cleanup(cx, "--age", "14")
    old_logs = list((cx.state / "logs").glob(f"{old['id']}.*.gz"))
    young_logs = list((cx.state / "logs").glob(f"{young['id']}.*.gz"))
    assert len(old_logs) >= 2 and len(young_logs) >= 2  # .jsonl, .stderr.log (+ .runner.log)
    archived = [Path(cx.job(j["id"])["report_path"]) for j in (old, young)]
    assert all(p.exists() for p in archived)

    # Alone, --delete-archives-older only deletes: nothing else is archived or compressed.
    data = cleanup(cx, "--delete-archives-older", "180")

    assert data["archived"] == 0
    assert data["deleted"] == 1 + len(old_logs)  # the old report and its logs
    assert not archived[0].exists() and not archived[0].parent.exists()  # empty month removed
    assert archived[1].exists()
    gone = cx.job(old["id"])
    assert gone["report_path"] is None and gone["log_path"] is None
    assert gone["state"] == "succeeded"  # the history stays
    assert not list((cx.state / "logs").glob(f"{old['id']}.*"))
    assert all(p.exists() for p in young_logs)


# -- dry run ------------------------------------------------------------------------------


def test_dry_run_changes_nothing_byte_for_byte(cx: Env) -> None:
    done = run_jobs(cx, ["a", "b", "@fake fail auth"], "--type", "research")
    age(cx, [j["id"] for j in done], 300)
    cleanup(cx, "--age", "200", "--compress-only", "--type", "research")  # some .gz exist too
    more = run_jobs(cx, ["c", "d"])
    age(cx, [j["id"] for j in more], 30)
    stray = cx.project / ".codexw" / "workers" / "20200101_000000_999_codex_task.md"
    stray.write_text("a report the registry does not know")
    os.utime(stray, (time.time() - 40 * DAY,) * 2)
    (cx.state / "logs" / ".cleanup-1234abcd-0000.tmp").write_text("left by a crash")

    roots = (cx.project, cx.state / "logs")
    before, rows = tree(*roots), registry(cx)
    for args in (
        ("--age", "7"), ("--keep", "0"), ("--compress-only", "--age", "1"),
        ("--delete-archives-older", "100", "--age", "1"), ("--all-projects", "--prune-missing"),
    ):
        data = cleanup(cx, "--dry-run", *args)
        assert data["dry_run"] is True
    text = cx.ok("cleanup", "--dry-run", "--age", "7").stdout
    assert "would archive report" in text and "dry run:" in text

    assert tree(*roots) == before
    assert registry(cx) == rows


# -- safety ---------------------------------------------------------------------------------


def test_files_of_running_and_queued_jobs_are_never_touched(cx: Env) -> None:
    gate = cx.tmp / "gate"
    running = cx.launch(f"@fake wait-for {gate}")
    wait_until(lambda: cx.job(running["job_id"])["state"] == "running", what="job running")
    temp = Path(running["report_path"])
    os.utime(temp, (time.time() - 90 * DAY,) * 2)  # even an ancient-looking TEMP file
    log = cx.state / "logs" / f"{running['job_id']}.jsonl"
    os.utime(log, (time.time() - 90 * DAY,) * 2)

    data = cleanup(cx, "--keep", "0", "--all-projects")

    assert data["archived"] == data["compressed"] == 0
    assert temp.exists() and log.exists()
    gate.touch()
    assert cx.run("wait", str(running["job_id"])).returncode == 0
    assert Path(cx.job(running["job_id"])["report_path"]).exists()


def test_temp_report_of_a_dead_runner_is_finalized_as_lost_never_deleted(cx: Env) -> None:
    gate = cx.tmp / "gate"
    info = cx.launch(f"@fake wait-for {gate}")
    job_id = info["job_id"]
    wait_until(lambda: cx.job(job_id)["state"] == "running", what="job running")
    temp = Path(info["report_path"])
    runner = cx.job(job_id)["runner_pid"]
    os.kill(runner, 9)
    wait_until(lambda: not os.path.exists(f"/proc/{runner}") or
               Path(f"/proc/{runner}/stat").read_text().split(")")[1].split()[0] == "Z",
               what="runner gone")

    dry = cleanup(cx, "--dry-run", "--keep", "0")
    assert any("finalizes it as lost" in s["reason"] for s in dry["skipped"])
    assert temp.exists()

    cleanup(cx, "--keep", "0")  # the reconcile comes first
    job = cx.job(job_id)
    assert job["state"] == "lost"
    final = Path(job["report_path"])
    assert final.exists() and "_TEMP_" not in final.name and not temp.exists()
    settle(cx)
    age(cx, [job_id], 2)
    cleanup(cx, "--age", "1")
    assert ".codexw/archive/" in cx.job(job_id)["report_path"]


def test_symlinks_are_never_followed(cx: Env) -> None:
    (job,) = run_jobs(cx, ["x"])
    age(cx, [job["id"]], 30)
    outside = cx.tmp / "outside"
    outside.mkdir()
    secret = outside / "20200101_000000_1_codex_task.md"
    secret.write_text("not yours")
    os.utime(secret, (time.time() - 90 * DAY,) * 2)
    workers = cx.project / ".codexw" / "workers"
    (workers / "20200101_000000_2_codex_task.md").symlink_to(secret)
    (cx.project / ".codexw" / "linked").symlink_to(outside, target_is_directory=True)
    (cx.project / ".codexw" / "archive").symlink_to(outside, target_is_directory=True)
    before = tree(outside)

    proc = cx.run("cleanup", "--age", "7", "--quiet")

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "archive" in proc.stderr and "not followed" in proc.stderr
    assert tree(outside) == before
    assert (workers / "20200101_000000_2_codex_task.md").is_symlink()
    assert Path(job["report_path"]).exists()  # could not be archived: left in place
    assert cx.job(job["id"])["report_path"] == job["report_path"]


def test_unknown_reports_go_by_mtime_and_unknown_temp_reports_are_left_alone(cx: Env) -> None:
    workers = cx.project / ".codexw" / "workers"
    workers.mkdir(parents=True)
    ancient = workers / "20200101_000000_4242_codex_task.md"
    fresh = workers / "20200101_000001_4243_codex_task.md"
    temp = workers / "20200101_000002_TEMP_77_codex_task.md"
    for path in (ancient, fresh, temp):
        path.write_text(f"# {path.name}\n")
    for path in (ancient, temp):
        os.utime(path, (time.time() - 30 * DAY,) * 2)

    data = cleanup(cx, "--age", "7")

    assert data["archived"] == 1
    month = time.strftime("%Y-%m", time.localtime(time.time() - 30 * DAY))
    assert (cx.project / ".codexw/archive" / month / "workers" / (ancient.name + ".gz")).exists()
    assert fresh.exists() and temp.exists() and not ancient.exists()
    assert [s["path"] for s in data["skipped"]] == [str(temp)]


def test_quiet_prints_nothing_when_all_is_well(cx: Env) -> None:
    (job,) = run_jobs(cx, ["x"])
    age(cx, [job["id"]], 30)
    proc = cx.run("cleanup", "--quiet")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert ".codexw/archive/" in cx.job(job["id"])["report_path"]
    text = cx.ok("cleanup").stdout
    assert "archived 0 reports" in text and str(cx.project) in text


# -- interrupted runs and concurrency -------------------------------------------------------


def _strays(cx: Env, count: int, days: float) -> dict[Path, bytes]:
    """Finished reports the registry does not know (they go by mtime), `days` old."""
    workers = cx.project / ".codexw" / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    made = {}
    for i in range(count):
        path = workers / f"20200101_000000_{50000 + i}_codex_task.md"
        path.write_bytes(f"# stray {i}\n".encode() * 50)
        os.utime(path, (time.time() - days * DAY,) * 2)
        made[path] = path.read_bytes()
    return made


def _whole_somewhere(cx: Env, texts: dict[Path, bytes]) -> None:
    """Every report is whole in place, in the archive, or both."""
    archived = {p.name[:-3]: p for p in (cx.project / ".codexw" / "archive").rglob("*.md.gz")}
    for path, text in texts.items():
        if not path.exists():
            assert gunzip(archived[path.name]) == text, path


@pytest.mark.parametrize("when", ["first copy linked", "originals going"])
def test_a_cleanup_killed_mid_run_is_finished_by_the_next(cx: Env, when: str) -> None:
    jobs = run_jobs(cx, ["a", "b"])
    age(cx, [j["id"] for j in jobs], 60)  # oldest: in the first batch
    texts = {Path(j["report_path"]): Path(j["report_path"]).read_bytes() for j in jobs}
    texts.update(_strays(cx, 1200, 30))  # two batches (mover.BATCH is 1000)
    archive = cx.project / ".codexw" / "archive"

    def reached() -> bool:
        if when == "first copy linked":
            return any(archive.rglob("*.md.gz"))
        return sum(1 for p in texts if not p.exists()) > 0

    proc = subprocess.Popen([sys.executable, "-m", "codexw", "cleanup", "--age", "7", "--quiet"],
                            cwd=cx.project, env=cx.env)
    deadline = time.monotonic() + 60
    try:
        while not reached() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # tight: the run must still be going when it is killed
        assert proc.poll() is None, f"cleanup ended before '{when}' was seen"
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup of its own
        proc.wait()

    _whole_somewhere(cx, texts)
    for job in jobs:
        assert Path(cx.job(job["id"])["report_path"]).exists()

    data = cleanup(cx, "--age", "7")

    assert data["ok"], data["errors"]
    assert not any(p.exists() for p in texts)
    _whole_somewhere(cx, texts)
    for job in jobs:
        assert cx.job(job["id"])["report_path"] == str(archive_path(cx, job))
    leftovers = [p for p in cx.project.rglob("*") if p.name.startswith(".cleanup-")]
    leftovers += [p for p in (cx.state / "logs").iterdir() if p.name.startswith(".cleanup-")]
    assert leftovers == []
    assert len(list(archive.rglob("*.md.gz"))) == len(texts)


@pytest.mark.parametrize("step", ["written", "linked", "recorded"])
def test_what_a_stop_between_steps_leaves_is_finished(cx: Env, step: str) -> None:
    """The disk and registry as a run that stopped after each step leaves them:
    written: a temporary copy with no name; linked: the copy in place, the registry
    still names the original; recorded: the registry names the copy, the original is
    still there."""
    (job,) = run_jobs(cx, ["a"])
    age(cx, [job["id"]], 10)
    original = Path(job["report_path"])
    text = original.read_bytes()
    packed = archive_path(cx, job)
    if step == "written":
        packed.parent.mkdir(parents=True)
        (packed.parent / ".cleanup-999999abcdef-0000.tmp").write_bytes(gzip.compress(text)[:9])
    else:
        cleanup(cx, "--age", "7")
        original.write_bytes(text)
        if step == "linked":
            with cx.db() as db:
                db.execute("UPDATE jobs SET report_path = ? WHERE id = ?", (str(original),
                                                                             job["id"]))
            db.close()

    data = cleanup(cx, "--age", "7")

    assert data["ok"], data["errors"]
    assert data["repaired"] == 1 and data["archived"] == (step == "written")
    assert not original.exists() and gunzip(packed) == text
    assert cx.job(job["id"])["report_path"] == str(packed)
    assert [p.name for p in packed.parent.iterdir()] == [packed.name]


def test_a_full_disk_leaves_every_report_in_place(cx: Env) -> None:
    from tests.faults.helpers import fill_disk, tmpfs

    jobs = run_jobs(cx, ["a", "b"])
    age(cx, [j["id"] for j in jobs], 10)
    texts = {Path(j["report_path"]): Path(j["report_path"]).read_bytes() for j in jobs}
    archive = cx.project / ".codexw" / "archive"
    with tmpfs(archive, "256k"):
        filler = fill_disk(archive)
        rows = registry(cx)

        proc = cx.run("cleanup", "--age", "7", "--quiet")

        assert proc.returncode == 1 and "No space left" in proc.stderr
        assert all(p.read_bytes() == t for p, t in texts.items())
        assert [r for r in registry(cx)] == rows
        assert [p.name for p in archive.rglob("*") if p.is_file()] == ["filler"]
        filler.unlink()
        data = cleanup(cx, "--age", "7")
        assert data["ok"] and data["archived"] == 2
        for job in jobs:
            assert gunzip(archive_path(cx, job)) == texts[Path(job["report_path"])]


def test_what_a_machine_crash_can_leave_is_repaired(cx: Env) -> None:
    a, b = run_jobs(cx, ["a", "b"])
    age(cx, [a["id"], b["id"]], 10)
    texts = {j["id"]: Path(j["report_path"]).read_bytes() for j in (a, b)}
    cleanup(cx, "--age", "7")
    # a: the copy was linked but its data never reached the disk; the original and the
    # registry are as before. b: the registry's last write was lost after the original went.
    packed_a = archive_path(cx, a)
    Path(a["report_path"]).write_bytes(texts[a["id"]])
    packed_a.write_bytes(packed_a.read_bytes()[:10])
    with cx.db() as db:
        db.execute("UPDATE jobs SET report_path = ? WHERE id = ?", (a["report_path"], a["id"]))
        db.execute("UPDATE jobs SET report_path = ? WHERE id = ?", (b["report_path"], b["id"]))
    db.close()

    data = cleanup(cx, "--age", "7")

    assert data["ok"] and data["repaired"] == 1 and data["archived"] == 1
    for job in (a, b):
        packed = archive_path(cx, job)
        assert cx.job(job["id"])["report_path"] == str(packed)
        assert gunzip(packed) == texts[job["id"]] and not Path(job["report_path"]).exists()


def test_a_second_cleanup_waits_for_the_first_or_gives_up(cx: Env) -> None:
    (job,) = run_jobs(cx, ["x"])
    age(cx, [job["id"]], 30)
    lock = cx.state / "cleanup.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        busy = cx.run("cleanup", "--lock-wait", "0", "--quiet")
        assert busy.returncode == 1
        assert "another cleanup (pid 4242) is still running" in busy.stderr
        assert Path(job["report_path"]).exists()

        waiting = subprocess.Popen(
            [sys.executable, "-m", "codexw", "cleanup", "--json", "--lock-wait", "60"],
            cwd=cx.project, env=cx.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        wait_until(lambda: _holds_open(waiting.pid, lock), what="the second cleanup at the lock")
        assert waiting.poll() is None and Path(job["report_path"]).exists()
    finally:
        os.close(fd)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads(out)["archived"] == 1


def _holds_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.slow
def test_two_cleanups_at_once_do_not_corrupt_anything(cx: Env) -> None:
    jobs = run_jobs(cx, [f"task {i}" for i in range(12)], "-j", "6")
    age(cx, [j["id"] for j in jobs], 20)
    originals = {j["id"]: Path(j["report_path"]).read_bytes() for j in jobs}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "codexw", "cleanup", "--json", "--age", "7", *extra],
            cwd=cx.project, env=cx.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for extra in ((), ("--all-projects",), ("--root", str(cx.project)))
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["archived"] for r in results) == len(jobs)  # each report exactly once
    for job in jobs:
        now = cx.job(job["id"])
        assert gunzip(Path(now["report_path"])) == originals[job["id"]]
        assert now["log_path"].endswith(".gz") and Path(now["log_path"]).exists()
        assert not Path(job["report_path"]).exists()
    names = [p.name for p in cx.project.rglob("*")] + [p.name for p in (cx.state / "logs").iterdir()]
    assert not [n for n in names if n.startswith(".cleanup-") or n.endswith(".md")]
    logs = [p.name for p in (cx.state / "logs").iterdir()]
    assert all(n.endswith(".gz") for n in logs)  # (a runner that ran several jobs has one .runner.log)
    assert sorted(n for n in logs if n.endswith(".jsonl.gz")) == sorted(
        f"{j['id']}.jsonl.gz" for j in jobs)


@pytest.mark.slow
def test_cleanup_during_a_running_batch_archives_only_finished_jobs(cx: Env) -> None:
    gate = cx.tmp / "gate"
    # -j 3: the quick ones run first, then the held ones fill every slot, the rest wait.
    tasks = [f"quick {i}" for i in range(3)] + [f"@fake wait-for {gate} ;held {i}" for i in range(3)]
    tasks += [f"queued {i}" for i in range(2)]
    out = cx.ok("batch", "-", "--detach", "--json", "-j", "3", input="\n".join(tasks) + "\n")
    batch = json.loads(out.stdout)
    ids = batch["job_ids"]
    quick, held, queued = ids[:3], ids[3:6], ids[6:]

    def states() -> dict[int, str]:
        rows = cx.db().execute(f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(ids))})",
                               ids).fetchall()
        return {r[0]: r[1] for r in rows}

    wait_until(lambda: all(states()[i] == "succeeded" for i in quick)
               and all(states()[i] == "running" for i in held), what="quick done, held running")
    age(cx, quick, 10)
    temps = {i: Path(cx.job(i)["report_path"]) for i in held + queued}

    data = cleanup(cx, "--age", "7")

    assert data["archived"] == len(quick)
    assert all(".codexw/archive/" in cx.job(i)["report_path"] for i in quick)
    assert all(p.exists() for p in temps.values())
    assert {states()[i] for i in held} == {"running"}
    assert {states()[i] for i in queued} == {"queued"}
    gate.touch()
    assert cx.run("wait", "--batch", str(batch["batch_id"])).returncode == 0
    for i in held + queued:
        job = cx.job(i)
        assert job["state"] == "succeeded" and Path(job["report_path"]).exists()
        assert ".codexw/archive/" not in job["report_path"] and not temps[i].exists()


# -- scope ------------------------------------------------------------------------------------


def test_scope_from_root_all_projects_named_root_and_missing_projects(cx: Env) -> None:
    (job,) = run_jobs(cx, ["here"])
    other = cx.tmp / "other"
    (other / ".git").mkdir(parents=True)
    (job2,) = run_jobs(cx, ["there"], "--cd", str(other))
    gone = cx.tmp / "gone"
    (gone / ".git").mkdir(parents=True)
    (job3,) = run_jobs(cx, ["vanishing"], "--cd", str(gone))
    age(cx, [job["id"], job2["id"], job3["id"]], 30)
    shutil.rmtree(gone)

    from_root = cx.run("cleanup", cwd=Path("/"))
    assert from_root.returncode == 2
    assert "--all-projects" in from_root.stderr and "--root" in from_root.stderr
    stray = cx.tmp / "elsewhere"
    stray.mkdir()
    assert cx.run("cleanup", cwd=stray).returncode == 2

    named = cleanup(cx, "--root", str(other), cwd=stray)
    assert named["projects"] == [str(other)] and named["archived"] == 1

    every = cleanup(cx, "--all-projects", cwd=Path("/"))
    assert every["projects"] == sorted([str(cx.project), str(other)])
    assert every["archived"] == 1
    assert every["missing_projects"] == [str(gone)]
    assert cx.job(job3["id"])["state"] == "succeeded"
    text = cx.ok("cleanup", "--all-projects", cwd=Path("/")).stdout
    assert f"project directory is gone: {gone}" in text and "--prune-missing" in text

    pruned = cleanup(cx, "--all-projects", "--prune-missing", cwd=Path("/"))
    assert pruned["pruned_jobs"] == 1
    assert cx.run("status", "--json", str(job3["id"])).returncode == 2
    assert not list((cx.state / "logs").glob(f"{job3['id']}.*"))
    assert cleanup(cx, "--all-projects", cwd=Path("/"))["missing_projects"] == []


def test_cleanup_says_the_age_in_force_and_what_it_left_and_why(cx: Env) -> None:
    cx.launch("just finished")
    assert cx.run("wait", "1").returncode == 0
    plain = cx.ok("cleanup").stdout
    assert "age 7d (the default)" in plain
    assert "left: 1 report ended in the last minute" in plain
    dry = cx.ok("cleanup", "--age", "0", "--dry-run").stdout
    assert "age 0" in dry and "left: 1 report ended in the last minute" in dry
    data = json.loads(cx.ok("cleanup", "--age", "3d", "--json").stdout)
    assert data["age"] == "3d" and data["kept"] == {"ended in the last minute": 1}
