"""Files a run changed (git status before/after) and the argv and usage of a resumed run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from codexw.core import gitdelta
from codexw.core.codex import RunSummary, build_argv
from codexw.core.models import JobSpec

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    git(root, "init", "-q")
    for name in ("kept", "dirty", "gone"):
        (root / name).write_text(name + "\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    (root / "dirty").write_text("dirty before the run\n")
    return root


def test_delta_lists_added_updated_deleted_and_committed_files(repo: Path) -> None:
    before = gitdelta.snapshot(str(repo / "sub"))
    assert before is not None and set(before.entries) == {"dirty"}
    (repo / "sub" / "new.txt").write_text("x")
    (repo / "dirty").write_text("changed again, still dirty, longer\n")
    (repo / "gone").unlink()
    (repo / ".codexw" / "workers").mkdir(parents=True)
    (repo / ".codexw" / "workers" / "r_TEMP_1_codex_task.md").write_text("report")
    (repo / "committed").write_text("c")
    git(repo, "add", "committed")
    git(repo, "commit", "-q", "-m", "by the agent")
    changed = gitdelta.changed_files(before, str(repo / "sub"))
    assert changed == {
        "new.txt": "add",
        str(repo / "dirty"): "update",
        str(repo / "gone"): "delete",
        str(repo / "committed"): "add",
    }


def test_nothing_changed_means_no_files(repo: Path) -> None:
    before = gitdelta.snapshot(str(repo))
    assert gitdelta.changed_files(before, str(repo)) == {}


def test_outside_a_repository_the_files_are_listed_and_compared(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "kept").write_text("kept\n")
    (plain / "edited").write_text("old\n")
    (plain / "gone").write_text("gone\n")
    (plain / ".codexw").mkdir()
    before = gitdelta.snapshot(str(plain))
    assert before is not None and before.walked
    (plain / "sub" / "made.txt").write_text("by a shell command\n")
    (plain / "edited").write_text("new and longer\n")
    (plain / "gone").unlink()
    (plain / ".codexw" / "report.md").write_text("codexw's own\n")
    assert gitdelta.changed_files(before, str(plain)) == {
        os.path.join("sub", "made.txt"): "add", "edited": "update", "gone": "delete",
    }
    assert gitdelta.changed_files(None, str(plain)) == {}


def test_outside_a_repository_a_huge_tree_is_not_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitdelta, "MAX_WALKED", 5)
    for i in range(6):
        (tmp_path / f"f{i}").write_text("x")
    assert gitdelta.snapshot(str(tmp_path)) is None


def _spec(tmp_path: Path, **kw: object) -> JobSpec:
    (tmp_path / ".git").mkdir(exist_ok=True)
    values: dict[str, object] = dict(task="t", level="high", type="workers", cwd=str(tmp_path),
                                     project=str(tmp_path), codex_bin="/bin/codex")
    values.update(kw)
    return JobSpec(**values)  # type: ignore[arg-type]


def test_resume_puts_every_exec_option_before_the_subcommand(tmp_path: Path) -> None:
    argv = build_argv(_spec(tmp_path, resume_thread="th-1", resume_of=1, model="m",
                            codex_args=("--add-dir", "/x", "-p", "fast")))
    at = argv.index("resume")
    assert argv[at:] == ["resume", "th-1", "-"]
    for option in ("--json", "-s", "-C", "-m", "--add-dir", "-p"):
        assert argv.index(option) < at
    assert argv[argv.index("-s") + 1] == "workspace-write"


def test_a_resumed_run_counts_only_its_own_tokens() -> None:
    summary = RunSummary(usage_baseline={"input_tokens": 100, "output_tokens": 20})
    summary.feed({"type": "turn.completed", "usage": {
        "input_tokens": 107, "cached_input_tokens": 4, "output_tokens": 23,
        "reasoning_output_tokens": 1}})
    assert summary.usage == {"input_tokens": 7, "cached_input_tokens": 4, "output_tokens": 3,
                             "reasoning_output_tokens": 1}


def test_a_stray_git_dir_inside_a_repository_is_not_the_project(repo: Path) -> None:
    inner = repo / "sub" / "inner"
    (inner / ".git").mkdir(parents=True)  # not a repository: git would walk past it
    assert gitdelta.snapshot(str(inner)) is None


def test_git_runs_without_optional_locks_and_ignores_an_inherited_git_dir(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's `git status` must never take index.lock while codex commits, and a
    GIT_DIR inherited from the launching shell must not point it at another repository."""
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True,
                              text=True, check=True).stdout.strip()
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    seen = tmp_path / "seen"
    spy = spy_dir / "git"
    spy.write_text(f'#!/bin/sh\necho "locks=$GIT_OPTIONAL_LOCKS" >> {seen}\nexec {real_git} "$@"\n')
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-a-repo"))
    before = gitdelta.snapshot(str(repo))
    assert before is not None
    (repo / "new").write_text("x\n")
    assert gitdelta.changed_files(before, str(repo)) == {"new": "add"}
    calls = seen.read_text().split()
    assert calls and set(calls) == {"locks=0"}
