"""Two sends of one edition never run at once; a crashed run's lock does not linger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

from editions import make_edition

from digest.errors import ExitCode
from digest.store import Store
from digest.store.locks import LockedError, edition_lock, run_lock
from digest.subscriber import Subscriber

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _edition_with_readers(store: Store) -> str:
    edition = make_edition(1, ("politics",))
    store.editions.save(edition)
    for i in range(3):
        store.subscribers.add(Subscriber(email=f"r{i}@example.org", topics=("politics",)), now=NOW)
    return edition.period


def test_a_second_send_of_the_same_edition_stops_at_once(store: Store, run) -> None:  # type: ignore[no-untyped-def]
    week = _edition_with_readers(store)
    with edition_lock(store.engine, "weekly/" + week):
        result = run("send", "weekly", "--week", week, expect=ExitCode.ERROR)
    assert f"error: a send or a change of weekly/{week} is already running" in result.output
    assert store.deliveries.counts("weekly/" + week)["sent"] == 0
    # once the first run is gone, the send goes ahead
    result = run("send", "weekly", "--week", week)
    assert "sent 3," in result.output


def test_the_lock_of_a_killed_process_is_released(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sqlalchemy import create_engine\n"
            "from digest.store.locks import run_lock\n"
            f"with run_lock(create_engine({url!r}), 'x', what='x'):\n"
            "    print('held', flush=True); time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        try:
            with run_lock(store.engine, "x", what="the holder"):
                raise AssertionError("the lock should be held")
        except LockedError as exc:
            assert "the holder is already running" in str(exc)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    with run_lock(store.engine, "x", what="x"):
        pass  # acquired: the kernel released the dead process's lock
