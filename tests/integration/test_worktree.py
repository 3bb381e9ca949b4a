"""A git worktree per job: real git, real runners, the fake codex writing files."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until
from tests.integration.conftest import git


def tree_state(project: Path) -> tuple[str, str]:
    """HEAD and `git status` (codexw's own .codexw/ with the reports left out)."""
    return (git(project, "rev-parse", "HEAD").strip(),
            git(project, "status", "--porcelain", "--", ".", ":(exclude).codexw"))


def test_four_parallel_jobs_writing_one_file_get_four_branches_main_tree_untouched(repo: Env) -> None:
    cx = repo
    before = tree_state(cx.project)
    gate = cx.tmp / "gate"
    tasks = "\n".join(
        f"@fake wait-for {gate}; @fake write-text shared.txt content of job {n}" for n in range(1, 5)
    )
    (cx.tmp / "tasks.txt").write_text(tasks + "\n")
    out = cx.ok("batch", str(cx.tmp / "tasks.txt"), "-j", "4", "--worktree", "--detach", "--json")
    ids = json.loads(out.stdout)["job_ids"]
    wait_until(lambda: cx.max_running() == 4, what="four jobs running at once")
    # While they run: each has its own worktree, none is the project.
    jobs = [cx.job(i) for i in ids]
    trees = {j["worktree"] for j in jobs}
    assert len(trees) == 4 and str(cx.project) not in trees
    assert all(j["branch"] == f"codexw/{j['id']}" for j in jobs)
    assert all(not t.startswith(str(cx.project)) for t in trees)  # outside the project tree
    gate.touch()
    assert cx.run("wait", *map(str, ids)).returncode == 0
    for job_id in ids:
        job = cx.job(job_id)
        assert job["files_changed"] == 1
        assert job["base_commit"] == before[0]
        content = git(cx.project, "show", f"codexw/{job_id}:shared.txt")
        assert content == f"content of job {ids.index(job_id) + 1}\n"
        author = git(cx.project, "log", "-1", "--format=%an <%ae>|%s|%b", f"codexw/{job_id}")
        assert author.startswith("Test User <test@example.com>|@fake wait-for")
        assert f"codexw job {job_id} (succeeded)" in author
    assert tree_state(cx.project) == before  # the main tree was never written
    assert (cx.project / "shared.txt").read_text().startswith("line 1\n")
    assert not list((cx.project / ".git").rglob("*.lock"))  # no index.lock left anywhere
    runs = cx.fake_runs()
    assert {r["cwd"] for r in runs if "cwd" in r} == trees
    listing = cx.ok("status").stdout
    assert "BRANCH" in listing and "codexw/1" in listing


def test_conflicts_then_merge_first_ok_second_conflicts_and_tree_stays_clean(repo: Env) -> None:
    cx = repo
    tasks = [json.dumps({"task": f"@fake write-text shared.txt version {n}"}) for n in (1, 2)]
    tasks.append(json.dumps({"task": "@fake write-text other.txt separate"}))
    (cx.tmp / "tasks.jsonl").write_text("\n".join(tasks) + "\n")
    ids = json.loads(cx.ok("batch", str(cx.tmp / "tasks.jsonl"), "--worktree", "--detach",
                           "--json").stdout)["job_ids"]
    assert cx.run("wait", "--batch", "1").returncode == 0
    found = cx.run("conflicts", "--json")
    assert found.returncode == 1, found.stderr  # overlapping hunks: exit 1
    pairs = json.loads(found.stdout)["pairs"]
    assert pairs == [{"jobs": ids[:2], "files": ["shared.txt"], "overlapping_hunks": ["shared.txt"]}]
    assert f"jobs {ids[0]} and {ids[1]}: shared.txt (overlapping changes" in cx.run("conflicts").stdout

    merged = cx.ok("merge", str(ids[0]))
    assert f"job {ids[0]}: codexw/{ids[0]} merged" in merged.stdout
    assert (cx.project / "shared.txt").read_text() == "version 1\n"
    head = tree_state(cx.project)
    assert head[1] == ""
    assert cx.job(ids[0])["merged_at"] is not None

    second = cx.run("merge", str(ids[1]))
    assert second.returncode == 1
    assert "conflicts with the current branch in shared.txt" in second.stderr
    assert tree_state(cx.project) == head  # aborted: the tree as it was
    assert not (Path(git(cx.project, "rev-parse", "--absolute-git-dir").strip()) / "MERGE_HEAD").exists()
    assert cx.job(ids[1])["merged_at"] is None
    # The first job is merged: only the third is left to compare with the second.
    assert json.loads(cx.run("conflicts", "--json").stdout)["pairs"] == []


def test_merge_batch_stops_at_the_first_conflict(repo: Env) -> None:
    cx = repo
    tasks = [json.dumps({"task": t}) for t in (
        "@fake write-text a.txt A", "@fake write-text shared.txt one",
        "@fake write-text shared.txt two", "@fake write-text b.txt B")]
    (cx.tmp / "t.jsonl").write_text("\n".join(tasks) + "\n")
    ids = json.loads(cx.ok("batch", str(cx.tmp / "t.jsonl"), "--worktree", "--detach",
                           "--json").stdout)["job_ids"]
    assert cx.run("wait", "--batch", "1").returncode == 0
    out = cx.run("merge", "--batch", "1", "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert [m["job_id"] for m in result["merged"]] == ids[:2]
    assert result["conflict"]["job_id"] == ids[2] and result["conflict"]["files"] == ["shared.txt"]
    assert result["not_merged"] == [ids[3]]
    assert tree_state(cx.project)[1] == ""
    # The conflict resolved by hand elsewhere; the rest merges on the next run.
    out = cx.run("merge", str(ids[3]), "--squash")
    assert out.returncode == 0, out.stderr
    assert (cx.project / "b.txt").read_text() == "B\n"


def test_merge_refuses_a_dirty_tree_and_an_open_job(repo: Env) -> None:
    cx = repo
    gate = cx.tmp / "gate"
    job = cx.launch(f"@fake wait-for {gate}\n@fake write-text new.txt x", "--worktree")
    refused = cx.run("merge", str(job["job_id"]))
    assert refused.returncode == 2 and "still" in refused.stderr
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    (cx.project / "shared.txt").write_text("edited by hand\n")
    refused = cx.run("merge", "1")
    assert refused.returncode == 1 and "uncommitted changes (shared.txt)" in refused.stderr
    assert (cx.project / "shared.txt").read_text() == "edited by hand\n"
    assert not (cx.project / "new.txt").exists()


def test_diff_shows_the_change_against_the_base(repo: Env) -> None:
    cx = repo
    cx.launch("@fake write-text shared.txt changed\nedit", "--worktree")
    assert cx.run("wait", "1").returncode == 0
    diff = cx.ok("diff", "1").stdout
    assert "-line 1" in diff and "+changed" in diff
    stat = cx.ok("diff", "1", "--stat").stdout
    assert "shared.txt" in stat and "1 file changed" in stat
    report = Path(cx.job(1)["report_path"]).read_text()
    assert "## Branch" in report and "`codexw/1`" in report and "1 file changed" in report
    plain = cx.run("diff", "1", env={})
    cx.launch("no worktree here")
    assert cx.run("wait", "2").returncode == 0
    refused = cx.run("diff", "2")
    assert refused.returncode == 2 and "did not run in a worktree" in refused.stderr
    assert plain.returncode == 0


def test_setup_failure_fails_the_job_with_its_reason_and_output_in_the_log(repo: Env) -> None:
    cx = repo
    (cx.project / ".codexw").mkdir()
    setup = json.dumps(["sh", "-c", "echo installing; echo 'no such package' >&2; exit 3"])
    (cx.tmp / "config" / "config.toml").write_text(
        f'backoff_base = "0.2s"\nkill_grace = "3s"\nworktree_setup = {setup}\n')
    cx.launch("@fake write-text x.txt never", "--worktree")
    assert cx.run("wait", "1").returncode == 1
    job = cx.job(1)
    assert job["state"] == "failed"
    assert "worktree setup `sh -c" in job["reason"] and "exited with status 3: no such package" in job["reason"]
    assert cx.fake_runs() == []  # codex never started
    logs = cx.ok("logs", "1").stdout
    assert "git worktree add -b codexw/1" in logs and "sh -c echo installing" in logs
    raw = [json.loads(line) for line in cx.ok("logs", "1", "--raw").stdout.splitlines()]
    outputs = [e["item"]["aggregated_output"] for e in raw if e.get("type") == "item.completed"]
    assert any("installing" in o and "no such package" in o for o in outputs)
    assert Path(job["worktree"]).is_dir()  # kept for inspection


def test_setup_runs_in_the_worktree_before_codex(repo: Env) -> None:
    cx = repo
    setup = json.dumps(["sh", "-c", "pwd > setup-ran.txt"])
    (cx.tmp / "config" / "config.toml").write_text(f"worktree_setup = {setup}\n")
    cx.launch("@fake write-text y.txt done", "--worktree")
    assert cx.run("wait", "1").returncode == 0
    tree = cx.job(1)["worktree"]
    assert (Path(tree) / "setup-ran.txt").read_text().strip() == os.path.realpath(tree)


def test_env_file_is_copied_in_and_never_committed(repo: Env) -> None:
    cx = repo
    (cx.project / ".env").write_text("API_KEY=secret\n")
    (cx.project / "local.json").write_text("{}\n")  # untracked, not ignored: still not committed
    (cx.tmp / "config" / "config.toml").write_text('worktree_copy = [".env", "local.json", "missing.cfg"]\n')
    cx.launch("@fake write-text out.txt ok", "--worktree", "--include-dirty")
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    tree = Path(job["worktree"])
    assert (tree / ".env").read_text() == "API_KEY=secret\n"
    committed = git(cx.project, "show", "--name-only", "--format=", "codexw/1").split()
    assert committed == ["out.txt"]
    report = Path(job["report_path"]).read_text()
    assert "missing.cfg does not exist in the project; not copied" in report


def test_dirty_main_tree_starts_from_head_and_says_so(repo: Env) -> None:
    cx = repo
    (cx.project / "shared.txt").write_text("uncommitted\n")
    launched = cx.run("launch", "--worktree", "@fake write-text z.txt z")
    assert "uncommitted changes: the job starts from HEAD without them" in launched.stderr
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert git(cx.project, "show", "codexw/1:shared.txt").startswith("line 1")
    assert "not in its worktree (--include-dirty carries them over)" in Path(
        job["report_path"]).read_text()
    # With --include-dirty the worktree starts from a commit of them.
    cx.launch("@fake write-text z2.txt z", "--worktree", "--include-dirty")
    assert cx.run("wait", "2").returncode == 0
    assert git(cx.project, "show", "codexw/2:shared.txt") == "uncommitted\n"
    assert git(cx.project, "diff", "--name-only", cx.job(2)["base_commit"], "codexw/2").split() == ["z2.txt"]
    assert (cx.project / "shared.txt").read_text() == "uncommitted\n"  # untouched


def test_kill_leaves_branch_and_worktree_then_retry_starts_fresh_from_the_original_base(repo: Env) -> None:
    cx = repo
    gate = cx.tmp / "gate"
    cx.launch(f"@fake write-text partial.txt half done; @fake wait-for {gate}", "--worktree")
    wait_until(lambda: cx.job(1)["state"] == "running", what="job 1 running")
    tree = Path(cx.job(1)["worktree"])
    wait_until(lambda: (tree / "partial.txt").exists(), what="the agent's first write")
    base = cx.job(1)["base_commit"]
    cx.ok("kill", "1")
    job = cx.job(1)
    assert job["state"] == "killed"
    assert tree.is_dir() and (tree / "partial.txt").read_text() == "half done\n"
    assert git(cx.project, "show", "codexw/1:partial.txt") == "half done\n"  # committed for inspection
    # A new commit in the main tree: the retry still starts where job 1 started.
    (cx.project / "later.txt").write_text("later\n")
    git(cx.project, "add", "later.txt")
    git(cx.project, "commit", "-qm", "later")
    gate.touch()
    retried = json.loads(cx.ok("retry", "1", "--json").stdout)
    new_id = retried["retried"][0]["new_id"] if "retried" in retried else retried["jobs"][0]["new_id"]
    assert cx.run("wait", str(new_id)).returncode == 0
    again = cx.job(new_id)
    assert again["base_commit"] == base
    assert again["branch"] == f"codexw/{new_id}" and again["worktree"] != str(tree)
    assert tree.is_dir()  # the killed attempt's worktree is still there
    assert git(cx.project, "merge-base", f"codexw/{new_id}", "main").strip() == base


def test_continue_goes_on_in_the_same_worktree_and_recreates_a_removed_one(repo: Env) -> None:
    cx = repo
    cx.launch("@fake write-text first.txt one", "--worktree")
    assert cx.run("wait", "1").returncode == 0
    tree = Path(cx.job(1)["worktree"])
    cx.ok("continue", "1", "@fake write-text second.txt two")
    assert cx.run("wait", "2").returncode == 0
    job = cx.job(2)
    assert (job["branch"], job["worktree"]) == ("codexw/1", str(tree))
    assert (tree / "first.txt").exists() and (tree / "second.txt").exists()
    assert job["files_changed"] == 2
    assert git(cx.project, "log", "--format=%s", "codexw/1").splitlines()[:2] == [
        "@fake write-text second.txt two", "@fake write-text first.txt one"]
    shutil.rmtree(tree)  # removed by hand
    cx.ok("continue", "2", "@fake write-text third.txt three")
    assert cx.run("wait", "3").returncode == 0
    assert (tree / "first.txt").exists() and (tree / "third.txt").exists()
    assert "made again from branch codexw/1" in Path(cx.job(3)["report_path"]).read_text()


def test_cleanup_removes_a_merged_worktree_keeps_unmerged_branches(repo: Env) -> None:
    cx = repo
    for name in ("a", "b"):
        cx.launch(f"@fake write-text {name}.txt {name}", "--worktree")
    assert cx.run("wait", "1", "2").returncode == 0
    merged_tree, other_tree = Path(cx.job(1)["worktree"]), Path(cx.job(2)["worktree"])
    cx.ok("merge", "1")
    dry = cx.ok("cleanup", "--dry-run")
    assert f"would delete worktree {merged_tree}" in dry.stdout
    assert merged_tree.is_dir()
    cx.ok("cleanup")
    assert not merged_tree.exists() and other_tree.is_dir()
    branches = git(cx.project, "branch", "--format=%(refname:short)").split()
    assert "codexw/1" not in branches and "codexw/2" in branches  # merged one deleted
    assert str(merged_tree) not in git(cx.project, "worktree", "list")
    # Old enough: its worktree goes, its unmerged branch stays; a folder deleted by hand is fine.
    with cx.db() as db:
        db.execute("UPDATE jobs SET ended_at = ended_at - 7200 WHERE id = 2")
    shutil.rmtree(other_tree)
    out = cx.ok("cleanup", "--age", "0", "--json")
    assert json.loads(out.stdout)["ok"]
    assert "codexw/2" in git(cx.project, "branch", "--format=%(refname:short)").split()
    cx.ok("cleanup", "--age", "0", "--prune-branches")
    assert "codexw/2" not in git(cx.project, "branch", "--format=%(refname:short)").split()


def test_worktree_refused_outside_git_and_for_celery(repo: Env, tmp_path: Path) -> None:
    cx = repo
    plain = tmp_path / "plain"
    plain.mkdir()
    out = cx.run("launch", "--worktree", "-C", str(plain), "task")
    assert out.returncode == 2 and "--worktree needs a git repository" in out.stderr
    out = cx.run("launch", "--worktree", "--backend", "celery", "--broker", "redis://127.0.0.1:1/0",
                 "task")
    assert out.returncode == 2 and "celery backend's workers do not share" in out.stderr
    assert not (cx.state / "codexw.db").exists() or cx.ok("status", "--json").stdout.count('"id"') == 0


def test_batch_sharing_one_tree_warns_once(repo: Env) -> None:
    cx = repo
    (cx.tmp / "t.txt").write_text("one\ntwo\n")
    out = cx.ok("batch", str(cx.tmp / "t.txt"), "-j", "2", "--detach")
    assert out.stderr.count("may write to one working tree at once (-j 2); --worktree") == 1
    out = cx.ok("batch", str(cx.tmp / "t.txt"), "-j", "2", "--detach", "--worktree")
    assert "one working tree" not in out.stderr
    assert cx.run("wait").returncode == 0


def test_a_command_run_inside_a_job_worktree_belongs_to_the_main_project(repo: Env) -> None:
    cx = repo
    cx.launch("@fake write-text w.txt w", "--worktree")
    assert cx.run("wait", "1").returncode == 0
    tree = Path(cx.job(1)["worktree"])
    listing = json.loads(cx.ok("status", "--json", cwd=tree).stdout)["jobs"]
    assert [j["id"] for j in listing] == [1]
    cx.ok("launch", "--json", "from inside the worktree", cwd=tree)
    assert cx.job(2)["project"] == str(cx.project)
    assert cx.run("wait", "2").returncode == 0


@pytest.mark.slow
def test_a_lost_runner_leaves_its_worktree_and_cleanup_keeps_uncommitted_work(repo: Env) -> None:
    cx = repo
    gate = cx.tmp / "gate"
    cx.launch(f"@fake write-text wip.txt half; @fake wait-for {gate}", "--worktree", "--retries", "1")
    wait_until(lambda: cx.job(1)["state"] == "running", what="job 1 running")
    job = cx.job(1)
    tree = Path(job["worktree"])
    wait_until(lambda: (tree / "wip.txt").exists(), what="the agent's first write")
    os.kill(job["runner_pid"], signal.SIGKILL)
    wait_until(lambda: cx.job(1)["state"] == "lost", what="job 1 recorded lost")
    assert (tree / "wip.txt").read_text() == "half\n"  # kept, uncommitted
    retry = cx.job(2)
    assert retry["base_commit"] == job["base_commit"] and retry["worktree"] != str(tree)
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    with cx.db() as db:
        db.execute("UPDATE jobs SET ended_at = ended_at - 7200")
    out = cx.ok("cleanup", "--age", "0")
    assert f"left alone: {tree}: job 1's worktree has uncommitted changes" in out.stdout
    assert (tree / "wip.txt").exists()
    assert not Path(cx.job(2)["worktree"]).exists()  # the retry's, committed: removed


def test_the_batch_display_flags_an_overlap_while_the_jobs_run(repo: Env) -> None:
    cx = repo
    gate = cx.tmp / "gate"
    tasks = [f"@fake write-text shared.txt {n}; @fake wait-for {gate}" for n in (1, 2)]
    tasks.append(f"@fake write-text solo.txt 3; @fake wait-for {gate}")
    (cx.tmp / "t.txt").write_text("\n".join(tasks) + "\n")
    batch = subprocess.Popen(
        [sys.executable, "-m", "codexw", "batch", str(cx.tmp / "t.txt"), "-j", "3", "--worktree"],
        cwd=cx.project, env=cx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in batch.stdout or []])
    reader.start()
    seen = []
    try:
        # The jobs hold until the gate opens: the flag can only come from their live worktrees.
        while not any(line.startswith("overlap:") for line in seen):
            seen.append(lines.get(timeout=60))
        gate.touch()
        assert batch.wait(timeout=120) == 0
    finally:
        gate.touch()
        batch.wait(timeout=120)
        reader.join()
    flagged = [line for line in seen if line.startswith("overlap:")]
    assert flagged == ["overlap: jobs 1 and 2 change the same lines of shared.txt: they will"
                       " conflict on merge (codexw conflicts --batch 1)"]
    assert not any(" succeeded" in line for line in seen)  # none had ended


def test_kill_during_setup_stops_it_and_the_job_is_killed(repo: Env) -> None:
    cx = repo
    started = cx.tmp / "setup-started"
    setup = json.dumps(["sh", "-c", f"touch {started}; sleep 300"])
    (cx.tmp / "config" / "config.toml").write_text(f'kill_grace = "3s"\nworktree_setup = {setup}\n')
    cx.launch("@fake write-text never.txt x", "--worktree")
    wait_until(started.exists, what="the setup command to start")
    cx.ok("kill", "1")
    job = cx.job(1)
    assert job["state"] == "killed"
    assert cx.fake_runs() == []  # codex never started; the cx fixture checks nothing survives


def test_merge_rebase_replays_the_branch_on_the_current_one_and_fast_forwards(repo: Env) -> None:
    cx = repo
    for name in ("one", "two"):
        cx.launch(f"@fake write-text {name}.txt {name}", "--worktree")
    assert cx.run("wait", "1", "2").returncode == 0
    cx.ok("merge", "1")
    shutil.rmtree(cx.job(2)["worktree"])  # a temporary worktree is made for the rebase
    out = cx.ok("merge", "2", "--rebase")
    assert "codexw/2 merged (rebase)" in out.stdout
    assert git(cx.project, "log", "-1", "--format=%s").strip() == "@fake write-text two.txt two"
    assert git(cx.project, "rev-parse", "HEAD") == git(cx.project, "rev-parse", "codexw/2")
    assert (cx.project / "one.txt").exists() and (cx.project / "two.txt").exists()
    assert ".rebase-" not in git(cx.project, "worktree", "list")


def test_worktree_is_refused_with_the_app_server_backend(repo: Env) -> None:
    proc = repo.run("launch", "--worktree", "--backend", "app-server", "task")
    assert proc.returncode != 0
    assert "--worktree is not available with --backend app-server" in proc.stderr
    assert not (repo.state / "codexw.db").exists() or repo.run("status", "--json").stdout.count('"id"') == 0


def test_a_follow_up_never_copies_through_an_agents_symlink_nor_reruns_setup(repo: Env) -> None:
    """The copies and the setup run as the user, outside codex's sandbox: on a worktree an
    agent has written in, codexw must not write through a link it planted or run what it
    left there."""
    cx = repo
    (cx.project / ".env").write_text("API_KEY=secret\n")
    runs = cx.tmp / "setup-runs"
    setup = json.dumps(["sh", "-c", f"echo ran >> {runs}"])
    (cx.tmp / "config" / "config.toml").write_text(
        f'worktree_copy = [".env", "conf"]\nworktree_setup = {setup}\n')
    (cx.project / "conf").mkdir()
    (cx.project / "conf" / "a.cfg").write_text("a\n")
    cx.launch("@fake write-text out.txt ok", "--worktree")
    assert cx.run("wait", "1").returncode == 0
    tree = Path(cx.job(1)["worktree"])
    assert runs.read_text() == "ran\n"
    # What the first agent could leave behind: its .env a link to the user's own file,
    # and the copied folder a link elsewhere.
    victim = cx.tmp / "victim.txt"
    victim.write_text("the user's file\n")
    (tree / ".env").unlink()
    (tree / ".env").symlink_to(victim)
    elsewhere = cx.tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(tree / "conf")
    (tree / "conf").symlink_to(elsewhere)
    cx.ok("continue", "1", "@fake write-text more.txt more")
    assert cx.run("wait", "2").returncode == 0
    assert victim.read_text() == "the user's file\n"
    assert list(elsewhere.iterdir()) == []
    assert runs.read_text() == "ran\n"  # setup ran once, for the fresh worktree only
    report = Path(cx.job(2)["report_path"]).read_text()
    assert "worktree_setup not run again" in report
    assert ".env is already in the worktree; not copied again" in report


def test_codex_options_are_refused_with_the_app_server_backend(cx: Env) -> None:
    for args in (["--add-dir", str(cx.tmp)], ["--codex-arg=-c", "--codex-arg=model_provider=x"]):
        proc = cx.run("launch", "--backend", "app-server", "task", *args)
        assert proc.returncode == 2, proc.stderr
        assert "cannot go to --backend app-server" in proc.stderr
    assert not (cx.state / "codexw.db").exists() or '"id"' not in cx.run("status", "--json").stdout
