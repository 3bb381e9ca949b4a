"""The safe-file primitives cleanup is built on, and how cleanup reads its options."""

from __future__ import annotations

import errno
import gzip
import io
import os
import sqlite3
from pathlib import Path

import pytest

from codexw.core import naming
from codexw.core.errors import BusyError, UsageError
from codexw.core.store import Store
from codexw.services.cleanup import CleanupRequest, copies
from codexw.services.cleanup.dirs import Dir, UnsafePath, exclusive_lock
from codexw.services.cleanup.plan import make_plan

NOW = 1_800_000_000.0


@pytest.fixture(params=["tmpfile", "named"])
def staging(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a copy is staged: an unnamed O_TMPFILE file, or a named temporary file."""
    if request.param == "named":
        monkeypatch.setattr(copies, "_tmpfile", False)
    elif not copies._tmpfile:
        pytest.skip("no O_TMPFILE here")
    return request.param


@pytest.mark.parametrize("size", [9000, copies.SMALL + 1])
def test_copy_is_gzipped_with_the_originals_mode_and_mtime(
    tmp_path: Path, staging: str, size: int
) -> None:
    src = tmp_path / "r_codex_task.md"
    src.write_bytes((b"# report\n" * (size // 9 + 1))[:size])
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_600_000_000_123_456_789,) * 2)
    with Dir.open(str(tmp_path)) as d, d.open_file(src.name) as fh:
        st = os.fstat(fh.fileno())
        staged = copies.write_copy(d, fh, compress=True, token="t1", mode=st.st_mode,
                                    mtime_ns=st.st_mtime_ns)
        assert copies.publish(d, staged, src.name + ".gz")
    packed = tmp_path / (src.name + ".gz")
    assert gzip.decompress(packed.read_bytes()) == src.read_bytes()
    assert packed.stat().st_size == staged.size
    assert packed.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert packed.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, packed.name]  # no tmp left


def _stage(d: Dir, tmp_path: Path, data: bytes) -> copies.Staged:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with src.open("rb") as fh:
        staged = copies.write_copy(d, fh, compress=False, token="t", mode=0o644, mtime_ns=0)
    src.unlink()
    return staged


def test_publish_never_overwrites_unless_asked(tmp_path: Path, staging: str) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "taken").write_text("first")
    with Dir.open(str(folder)) as d:
        assert not copies.publish(d, _stage(d, tmp_path, b"second"), "taken")
        assert (folder / "taken").read_text() == "first"
        assert copies.publish(d, _stage(d, tmp_path, b"second"), "taken", replace=True)
        assert copies.publish(d, _stage(d, tmp_path, b"third"), "new")
    assert (folder / "taken").read_text() == "second"
    assert sorted(p.name for p in folder.iterdir()) == ["new", "taken"]


def test_links_are_refused_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "file").write_text("x")
    (tmp_path / "dirlink").symlink_to(real, target_is_directory=True)
    (tmp_path / "filelink").symlink_to(real / "file")
    with Dir.open(str(tmp_path)) as d:
        with pytest.raises(UnsafePath):
            d.sub("dirlink")
        with pytest.raises(UnsafePath):
            d.sub("dirlink", create=True)
        with pytest.raises(OSError) as err:
            d.open_file("filelink")
        assert err.value.errno == errno.ELOOP
        assert "filelink" not in d.files() and d.subdirs() == ["real"]
        assert d.unlink("filelink")  # removes the link, not its target
    assert (real / "file").read_text() == "x"


def test_same_content_compares_plain_and_gzipped_streams(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    packed = gzip.compress(data)
    same = copies.same_content
    assert same(io.BytesIO(data), copies.content(io.BytesIO(packed), True))
    assert not same(io.BytesIO(data + b"x"), copies.content(io.BytesIO(packed), True))
    assert not same(io.BytesIO(data), copies.content(io.BytesIO(packed[:-20]), True))
    assert not same(io.BytesIO(data), copies.content(io.BytesIO(b"not gzip"), True))
    assert copies.gzip_size(io.BytesIO(b"a" * 100_000)) < 1000


def test_lock_gives_up_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "cleanup.lock"
    with exclusive_lock(lock, wait=0):
        with pytest.raises(BusyError) as err, exclusive_lock(lock, wait=0.1):
            pass
        assert f"pid {os.getpid()}" in str(err.value) and err.value.exit_code == 1
    with exclusive_lock(lock, wait=0):  # released
        pass


def test_stale_temporary_files_are_those_of_other_runs() -> None:
    assert naming.is_stale_cleanup_tmp(".cleanup-123abc-0f0f.tmp", "999")
    assert not naming.is_stale_cleanup_tmp(".cleanup-999-0f0f.tmp", "999")
    assert not naming.is_stale_cleanup_tmp(".20250101_000000_1_codex_task.md.ab12.tmp", "999")


def test_numbered_names_keep_the_report_suffix() -> None:
    assert naming.numbered("20250101_000000_42_codex_task.md.gz", 2) == "20250101_000000_42_2_codex_task.md.gz"
    assert naming.numbered("7.jsonl.gz", 3) == "7.jsonl.3.gz"


def test_options_default_age_and_what_runs() -> None:
    plan = make_plan(CleanupRequest(), NOW)
    assert plan.age_cutoff == NOW - 7 * 86400 and plan.archive_step
    assert make_plan(CleanupRequest(age="36h"), NOW).age_cutoff == NOW - 36 * 3600
    assert make_plan(CleanupRequest(age="14"), NOW).age_cutoff == NOW - 14 * 86400
    keep = make_plan(CleanupRequest(keep=5), NOW)
    assert keep.age_cutoff is None and keep.keep == 5
    only_delete = make_plan(CleanupRequest(delete_archives_older="180"), NOW)
    assert not only_delete.archive_step and only_delete.delete_cutoff == NOW - 180 * 86400
    both = make_plan(CleanupRequest(delete_archives_older="180", age="7"), NOW)
    assert both.archive_step
    assert make_plan(CleanupRequest(age="0"), NOW).age_cutoff == NOW  # everything that ended
    assert make_plan(CleanupRequest(age="0h"), NOW).age_cutoff == NOW
    for bad in (CleanupRequest(all_projects=True, root="/x"), CleanupRequest(keep=-1),
                CleanupRequest(job_type="archive"), CleanupRequest(job_type="Bad Type"),
                CleanupRequest(age="-1"), CleanupRequest(age="7 days")):
        with pytest.raises(UsageError):
            make_plan(bad, NOW)


# -- the mover: copy → sync → record → remove, with the removals in threads -------------------


def test_an_unnamed_copy_is_made_beside_the_original_and_named_in_the_target(
    tmp_path: Path,
) -> None:
    """The copy's inode comes from the original's folder (cheap to allocate where the
    originals are being freed); it appears only under its name in the target, and a
    target on another filesystem gets its copy made there."""
    if not copies._tmpfile:
        pytest.skip("no O_TMPFILE here")
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = tmp_path / "src" / "r_codex_task.md"
    src.write_bytes(b"# report\n" * 300)
    targets = [tmp_path / "dst"]
    if os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != tmp_path.stat().st_dev:
        targets.append(Path(os.path.realpath("/dev/shm")))
    for target in targets:
        name = f"{os.getpid()}-{target.name}.md.gz"
        with Dir.open(str(tmp_path / "src")) as s, Dir.open(str(target)) as t:
            fd, st = s.open_fd(src.name)
            try:
                staged = copies.write_copy(t, fd, compress=True, token="t", mode=st.st_mode,
                                            mtime_ns=st.st_mtime_ns, durable=False, near=s,
                                            size=st.st_size)
            finally:
                os.close(fd)
            assert copies.publish(t, staged, name, durable=False)
        try:
            assert gzip.decompress((target / name).read_bytes()) == src.read_bytes()
        finally:
            (target / name).unlink()
        assert [p.name for p in (tmp_path / "src").iterdir()] == [src.name]


def _mover_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> tuple[Store, list[Path], list[int]]:
    from codexw.core.models import JobSpec, JobState

    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    store = Store.open()
    folder = tmp_path / "workers"
    folder.mkdir()
    paths, ids = [], []
    with store.transaction(notify_waiters=False):
        for i in range(count):
            spec = JobSpec(task=f"t{i}", level="low", type="workers", cwd=str(tmp_path),
                           project=str(tmp_path), codex_bin="codex")
            job_id = store.insert_job(spec, now=NOW + i)
            store.finish(job_id, JobState.SUCCEEDED, ended_at=NOW + i + 1, exit_code=0)
            path = folder / f"r{i}_codex_task.md"
            path.write_bytes(f"# report {i}\n".encode() * 40)
            store.conn.execute("UPDATE jobs SET report_path = ? WHERE id = ?", (str(path), job_id))
            paths.append(path)
            ids.append(job_id)
    return store, paths, ids


def test_the_mover_removes_originals_only_after_the_registry_names_the_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches overlap (a batch's sync and removals run while the next is copied), yet
    every original goes only once its copy is synced and recorded; a job whose record
    changed meanwhile keeps its original (the batch's one executemany says which)."""
    from codexw.services.cleanup import mover as mover_mod
    from codexw.services.cleanup.result import Action, CleanupResult

    monkeypatch.setattr(mover_mod, "BATCH", 7)
    store, paths, ids = _mover_setup(tmp_path, monkeypatch, 30)
    synced: set[str] = set()
    real_sync = mover_mod.sync_filesystems

    def sync(directories: list[Dir]) -> None:
        real_sync(directories)
        synced.update(p.name for p in (tmp_path / "archive").iterdir())

    monkeypatch.setattr(mover_mod, "sync_filesystems", sync)
    removed_before_recorded = []
    real_unlink = mover_mod._unlink

    def unlink(directory: Dir, name: str) -> str | None:  # in a remover thread
        db = sqlite3.connect(tmp_path / "state" / "codexw.db")  # what is committed
        try:
            row = db.execute("SELECT report_path FROM jobs WHERE report_path LIKE ?",
                             (f"%/{name}.gz",)).fetchone()
        finally:
            db.close()
        if row is None or name + ".gz" not in synced:
            removed_before_recorded.append(name)
        return real_unlink(directory, name)

    monkeypatch.setattr(mover_mod, "_unlink", unlink)
    rows = {r.id: r for r in store.job_files(str(tmp_path))}
    # Job 5's record changes after it was read: its original must stay.
    with store.transaction():
        store.conn.execute("UPDATE jobs SET report_path = 'elsewhere' WHERE id = ?", (ids[5],))
    result = CleanupResult(dry_run=False)
    mover = mover_mod.Mover(store, result, "tok")
    (tmp_path / "archive").mkdir()
    with Dir.open(str(tmp_path / "workers")) as src, Dir.open(str(tmp_path / "archive")) as dst:
        try:
            for path, job_id in zip(paths, ids, strict=True):
                action = Action("archive", "report", str(path), None, job_id)
                mover.queue(mover_mod.Move(action, src, path.name, dst, path.name + ".gz",
                                           False, True, rows[job_id], str(path), False))
            mover.flush()
        finally:
            mover.close()
    store.close()

    assert removed_before_recorded == []
    assert [p.name for p in (tmp_path / "workers").iterdir()] == [paths[5].name]
    assert [s.path for s in result.skipped] == [str(paths[5])]
    assert result.count("archive") == 29 and not result.errors
    for i, path in enumerate(paths):
        packed = tmp_path / "archive" / (path.name + ".gz")
        assert gzip.decompress(packed.read_bytes()) == f"# report {i}\n".encode() * 40
