"""The safe-file primitives cleanup is built on, and how cleanup reads its options."""

from __future__ import annotations

import errno
import gzip
import io
import os
from pathlib import Path

import pytest

from codexw.core import naming
from codexw.core.errors import BusyError, UsageError
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
