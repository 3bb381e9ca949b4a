"""Every path codexw uses comes from here, with env overrides for tests."""

from __future__ import annotations

import os
from pathlib import Path

APP = "codexw"


def state_dir() -> Path:
    """Registry and logs live here (0700). CODEXW_STATE_DIR overrides platformdirs."""
    override = os.environ.get("CODEXW_STATE_DIR")
    if override:
        path = Path(override).expanduser()
    else:
        from platformdirs import user_state_dir

        path = Path(user_state_dir(APP))
    return path


def ensure_state_dir() -> Path:
    """Create the state dir 0700 (and logs/ in it). An existing one that is ours and
    open to others is tightened, but only if it is empty or holds our registry: an
    override such as CODEXW_STATE_DIR=/tmp is never chmod-ed."""
    path = state_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    ours = st.st_uid == os.getuid()
    if st.st_mode & 0o077 and ours and ((path / "codexw.db").exists() or not any(path.iterdir())):
        path.chmod(0o700)
    (path / "logs").mkdir(exist_ok=True, mode=0o700)
    return path


def db_path() -> Path:
    return state_dir() / "codexw.db"


def logs_dir() -> Path:
    return state_dir() / "logs"


def user_config_file() -> Path:
    override = os.environ.get("CODEXW_CONFIG_DIR")
    if override:
        return Path(override).expanduser() / "config.toml"
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP)) / "config.toml"


def project_root(start: str | os.PathLike[str]) -> Path:
    """The git top-level containing `start`, else `start` itself (no subprocess). In a
    job's own worktree (under <state dir>/worktrees/), the main repository's: the job
    and whatever runs there belong to the main project."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        dot_git = candidate / ".git"
        if dot_git.exists():
            return (_main_of_worktree(candidate, dot_git) if dot_git.is_file() else None) or candidate
    return here


def _main_of_worktree(top: Path, dot_git: Path) -> Path | None:
    """For a codexw worktree, the main repository its `.git` file points into
    (`gitdir: <main>/.git/worktrees/<name>`); None for any other checkout."""
    try:
        top.relative_to(state_dir().resolve() / "worktrees")
        text = dot_git.read_text(encoding="utf-8", errors="replace")[:4096]
    except (ValueError, OSError):
        return None
    if not text.startswith("gitdir: "):
        return None
    gitdir = Path(text[len("gitdir: "):].strip())
    if gitdir.parent.name != "worktrees" or gitdir.parent.parent.name != ".git":
        return None
    main = gitdir.parent.parent.parent
    return main if main.is_dir() else None


def codexw_dir(project: str | os.PathLike[str]) -> Path:
    return Path(project) / ".codexw"


def report_dir(project: str | os.PathLike[str], job_type: str) -> Path:
    return codexw_dir(project) / job_type


def project_config_file(project: str | os.PathLike[str]) -> Path:
    return codexw_dir(project) / "config.toml"


def packaged_templates_dir() -> Path:
    """templates/ inside the wheel, or the source checkout's top-level templates/."""
    here = Path(__file__).resolve().parent.parent
    inside = here / "templates"
    if inside.is_dir():
        return inside
    return here.parent / "templates"
