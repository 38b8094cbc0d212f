"""tests/pgserver.py: server options given before the command reach the server's command
line; anything else is the command, run as given."""

from __future__ import annotations

import pytest
from pgserver import split_settings


def test_settings_before_the_command_are_split_from_it() -> None:
    args = ["-c", "fsync=on", "-c", "full_page_writes=on", "python", "-c", "print(1)"]
    assert split_settings(args) == (
        ["fsync=on", "full_page_writes=on"],
        ["python", "-c", "print(1)"],  # the command's own -c is left alone
    )
    assert split_settings(["pytest", "-q"]) == ([], ["pytest", "-q"])


def test_a_setting_without_a_value_is_refused() -> None:
    with pytest.raises(SystemExit, match="-c fsync: expected NAME=VALUE"):
        split_settings(["-c", "fsync", "pytest"])
