from __future__ import annotations

from pathlib import Path

import pytest

from codexw.core.config import load_config
from codexw.core.durations import format_duration, parse_duration
from codexw.core.errors import ConfigError, UsageError


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    user = tmp_path / "user"
    project = tmp_path / "project"
    (project / ".codexw").mkdir(parents=True)
    user.mkdir()
    monkeypatch.setenv("CODEXW_CONFIG_DIR", str(user))
    for key in ("CODEXW_LEVEL", "CODEXW_TIMEOUT", "CODEXW_MAX_PARALLEL", "CODEXW_CODEX_ARGS"):
        monkeypatch.delenv(key, raising=False)
    return user, project


def test_precedence_flag_env_project_user_default(dirs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    user, project = dirs
    assert load_config(project).level == "low"
    (user / "config.toml").write_text('level = "medium"\ntimeout = "20m"\n')
    assert load_config(project).level == "medium"
    (project / ".codexw" / "config.toml").write_text('level = "high"\n')
    cfg = load_config(project)
    assert (cfg.level, cfg.timeout) == ("high", 1200.0)
    monkeypatch.setenv("CODEXW_LEVEL", "xhigh")
    cfg = load_config(project)
    assert cfg.level == "xhigh" and cfg.sources["level"] == "CODEXW_LEVEL"
    assert cfg.with_overrides(level="minimal", model=None).level == "minimal"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('colour = "red"\n', "unknown key 'colour'"),
        ('level = "HIGH"\n', "bad value 'HIGH' for 'level'"),
        ("max_parallel = 0\n", "bad value 0 for 'max_parallel'"),
        ('timeout = "soon"\n', "bad value 'soon' for 'timeout'"),
        ('codex_args = "x"\nlevel = [1]\n', "for 'level'"),
        ("level = \n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(dirs, content: str, message: str) -> None:  # type: ignore[no-untyped-def]
    user, project = dirs
    (user / "config.toml").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(project)
    assert message in str(info.value)
    assert str(user / "config.toml") in str(info.value)


def test_bad_env_value_names_the_variable(dirs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CODEXW_MAX_PARALLEL", "many")
    with pytest.raises(ConfigError, match="CODEXW_MAX_PARALLEL"):
        load_config(dirs[1])


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("2h", 7200), ("1.5h", 5400), ("45", 45)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_default_unit_days() -> None:
    assert parse_duration("7", default_unit="d") == 7 * 86400


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0s", "10x", "1 h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(x) for x in (None, 5, 65, 3700, 200000)] == ["-", "5s", "1m05s", "1h01m", "2d07h"]
