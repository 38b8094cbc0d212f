"""digest.yaml is validated on load; every error names the file, the key path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from digest.config import load_config
from digest.errors import ConfigError, ExitCode


def _write(project: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_sample_config_loads(config) -> None:  # type: ignore[no-untyped-def]
    assert config.digest("weekly").per_topic == 3
    assert [t.key for t in config.topics][:2] == ["politics", "tech"]
    assert config.store_url.endswith("/project/digest.db")


def test_broken_yaml_names_file_and_line(project: Path, run) -> None:  # type: ignore[no-untyped-def]
    path = project / "digest.yaml"
    lines = path.read_text().splitlines()
    lines[8] = "  name: [unclosed"
    path.write_text("\n".join(lines))
    result = run("check", expect=ExitCode.BAD_INPUT)
    assert f"error: {path}:" in result.output
    assert "invalid YAML" in result.output


def test_unknown_topic_in_digest_names_key_path(project: Path) -> None:
    path = _write(project, lambda d: d["digests"][0]["topics"].append("sports"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "digests[0].topics[6]"
    assert "unknown topic 'sports'" in info.value.reason


def test_unknown_key_is_refused(project: Path) -> None:
    path = _write(project, lambda d: d["site"].update(colour="blue"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: site.colour: unknown key"


def test_wrong_type_names_key_and_reason(project: Path) -> None:
    path = _write(project, lambda d: d["digests"][0].update(per_topic="three"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "digests[0].per_topic"
    assert "integer" in info.value.reason


def test_bad_time_zone_and_url(project: Path) -> None:
    path = _write(project, lambda d: d["site"].update(timezone="Mars/Olympus"))
    with pytest.raises(ConfigError, match=r"site.timezone: unknown time zone 'Mars/Olympus'"):
        load_config(path)
    path = _write(project, lambda d: d["site"].update(timezone="UTC", base_url="ftp://x"))
    with pytest.raises(ConfigError, match=r"site.base_url: not an http\(s\) URL"):
        load_config(path)


def test_missing_required_key(project: Path) -> None:
    path = _write(project, lambda d: d.pop("sender"))
    with pytest.raises(ConfigError, match=r"sender: required key is missing"):
        load_config(path)


def test_missing_file_exits_2_with_hint(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from digest.cli import cli

    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.yaml"), "check"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "nope.yaml: file not found" in result.output
    assert "hint: pass --config PATH" in result.output


def test_duplicate_topic_key(project: Path) -> None:
    path = _write(project, lambda d: d["topics"].append(dict(d["topics"][0])))
    with pytest.raises(ConfigError, match=r"topics\[6\].key: 'politics' appears twice"):
        load_config(path)
