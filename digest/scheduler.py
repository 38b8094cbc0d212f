"""`digest scheduler`: run-due in a loop, every `interval` seconds on the boundary, until
stopped (SIGTERM or Ctrl-C); a failed run is logged and the loop goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from digest.errors import DigestError
from digest.runner import Runner, run_due
from digest.store.locks import LockedError


class Stop(Protocol):
    """When the scheduler loop ends (threading.Event; tests pass a fake clock's)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float) -> bool: ...


def loop(
    make: Callable[[], Runner], *, stop: Stop, interval: float, log: Callable[[str], None]
) -> int:
    """Run `run_due` every `interval` seconds (on the boundary) until `stop` is set;
    returns how many runs there were. A failed run is logged; the loop goes on."""
    runs = 0
    while not stop.is_set():
        run = make()
        try:
            for action in run_due(run):
                log(action.line())
        except LockedError:
            log(f"{run.now().isoformat(timespec='seconds')}  another run-due is running")
        except DigestError as exc:
            log(f"{run.now().isoformat(timespec='seconds')}  error: {exc}")
        runs += 1
        stop.wait(interval - run.now().timestamp() % interval)
    return runs
