"""`codexw trust` / `codexw untrust`: let a project's config use the keys that need trust.

The keys (config.NEEDS_TRUST) can run a program or weaken the sandbox, so trusting shows
what becomes active, and trust holds only for the exact content trusted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.core import config, paths, trust
from codexw.core.errors import ConfigError, UsageError


@dataclass
class TrustResult:
    config: str
    project: str
    sha256: str
    was: str  # the state before: untrusted | changed | trusted
    active: dict[str, Any]  # the keys needing trust that now count, with their values

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config, "project": self.project, "sha256": self.sha256,
                "was": self.was, "active": self.active}


@dataclass
class UntrustResult:
    config: str
    project: str
    removed: int
    ignored: list[str] = field(default_factory=list)  # keys the config now loses

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config, "project": self.project, "removed": self.removed,
                "ignored": self.ignored}


@dataclass
class TrustedEntry:
    config: str
    project: str
    sha256: str
    trusted_at: float | None
    keys: list[str]
    state: str  # trusted | changed (edited since) | missing (file gone)

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config, "project": self.project, "sha256": self.sha256,
                "trusted_at": self.trusted_at, "keys": self.keys, "state": self.state}


def locate(path: str | None) -> tuple[Path, Path]:
    """(project, config file) for a project directory (any directory in it) or for the
    config file itself (`…/.codexw/config.toml`)."""
    target = Path(path or os.getcwd()).expanduser()
    if target.is_dir():
        project = paths.project_root(target)
        return project, paths.project_config_file(project)
    if target.parent.name == ".codexw" and (target.exists() or target.is_symlink()):
        project = target.parent.parent.resolve()
        return project, paths.project_config_file(project)
    if target.exists():
        raise UsageError(f"{target} is not a project directory or a .codexw/config.toml",
                         "give the project's directory")
    raise UsageError(f"{target} does not exist", "give the project's directory")


def _values(project: Path, file: Path) -> tuple[bytes, dict[str, Any], list[str]]:
    content = config.read_bytes(file)
    if content is None:
        raise UsageError(f"no project config at {file}", "nothing to trust")
    values = config.parse_file(file, content)  # an invalid file is refused, naming the key
    user = paths.user_config_file()
    held = config.needing_trust(values, config.parse_file(user, config.read_bytes(user)))
    return content, values, held


def trust_project(path: str | None = None) -> TrustResult:
    """Trust the project's config as it is now."""
    project, file = locate(path)
    content, values, held = _values(project, file)
    was = trust.state(file, project, content)
    entry = trust.add(file, project, content, held)
    return TrustResult(str(file), str(project), entry["sha256"], was,
                       {key: _plain(values[key]) for key in held})


def untrust_project(path: str | None = None) -> UntrustResult:
    """Forget trust of the project's config; the keys needing trust are ignored again."""
    project, file = locate(path)
    removed = trust.remove(project)
    held: list[str] = []
    try:
        _, _, held = _values(project, file)
    except UsageError:
        pass  # no config (any more): nothing is ignored, but the trust is gone anyway
    return UntrustResult(str(file), str(project), removed, held)


def list_trusted() -> list[TrustedEntry]:
    found = []
    for entry in trust.entries():
        file = Path(entry["config"])
        try:
            content = config.read_bytes(file)
        except ConfigError:
            content = None
        if content is None:
            state = "missing"
        else:
            state = trust.TRUSTED if trust.content_hash(content) == entry["sha256"] else "changed"
        keys = entry.get("keys")
        when = entry.get("trusted_at")
        found.append(TrustedEntry(
            entry["config"], entry["project"], entry["sha256"],
            when if isinstance(when, int | float) else None,
            [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else [], state,
        ))
    return found


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
