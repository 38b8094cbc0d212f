"""The task queue in the store's PostgreSQL database (procrastinate): what `digest send
--workers` defers and the tasks `digest worker` processes run (`workers.Worker`).

`digest send --workers` prepares an edition exactly as an in-process send does
(`send.prepare`, under the edition's lock: render every content, plan the audience once,
reconcile what a crash left in `sending`, suppress rows of subscribers who left), then
defers one task per batch of at most 1,000 pending rows with identical content (content
key and row ids), and one final task at a lower priority. Each edition's batch tasks have
a queue of their own, so the final task can ask whether any is still waiting. Periodic
tasks run `digest run-due` every minute and hand jobs of workers that stopped answering
to others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from digest import lifecycle
from digest import send as sending
from digest.config import Config
from digest.editions import Edition
from digest.errors import DigestError, UsageError
from digest.store import Store
from digest.store.deliveries import DeliveryStore
from digest.store.locks import LockedError, run_lock
from digest.transports.base import Transport

try:
    import procrastinate
    import psycopg
    from procrastinate.job_context import JobContext
except ImportError:  # pragma: no cover - the postgres extra is not installed
    procrastinate = None  # type: ignore[assignment]

MAX_BATCH = 1000  # deliveries per task: SendGrid's limit of personalizations per request
# seconds before a task that met an exclusive holder of the lock runs again (and between
# polls of an idle worker): the final task that met the last batches waits this long
LOCK_WAIT = 0.25
LOCK_TRIES = 14400  # so a task waits an hour at most for a send, a cancel or the final task
INSTALL_TRIES = 120  # half-second waits for another process creating the queue's tables
DEFER_CHUNK = 20  # batch tasks deferred in one statement
FINAL_PRIORITY = -1  # below every batch: it runs once no batch task is waiting
Now = Callable[[], datetime]


class Busy(DigestError):
    """The final task found batch tasks of its edition still waiting to run."""


@dataclass(frozen=True)
class Queued:
    """What `digest send --workers` deferred."""

    edition: str
    batches: int
    rows: int
    skipped: int = 0  # sent by earlier runs
    in_doubt: int = 0  # rows a crash left in doubt, reconciled before deferring
    stopped: bool = False  # (a run-due report reads it, as of an in-process send)
    already: bool = False  # the workers were still sending it: nothing was queued

    def line(self) -> str:
        if self.already:
            return "already with the workers: nothing queued"
        text = f"queued {self.rows} deliveries in {self.batches} batches for the workers"
        if self.skipped:
            text += f", skipped {self.skipped}"
        if self.in_doubt:
            text += f" (in doubt {self.in_doubt})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def fingerprint(edition: Edition) -> str:
    """A digest of the edition's content (status aside): a task refuses any other edition."""
    data = edition.to_dict()
    data.pop("status")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def conninfo(store_url: str) -> str:
    """The libpq URL of a PostgreSQL store (its options, e.g. a search_path, kept)."""
    url = make_url(store_url)
    if url.get_backend_name() != "postgresql":
        raise UsageError(
            f"workers need a PostgreSQL store, not {url.get_backend_name()}: with SQLite, "
            "digest send sends in-process (drop --workers)",
            hint="store: postgresql+psycopg://user@host/db in digest.yaml",
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _final_lock(edition_key: str) -> str:
    return f"digest-finish:{edition_key}"


def send_queue(edition_key: str) -> str:
    """Each edition's batch tasks have a queue of their own, so the final task can ask
    whether any is still waiting; workers serve every queue."""
    return f"digest-send:{edition_key}"


# -- the tasks -------------------------------------------------------------------------
def _tasks() -> Any:
    """The queue's tasks, on a fresh blueprint (one per App: an App takes its tasks over)."""
    tasks = procrastinate.Blueprint()
    retry_busy = procrastinate.RetryStrategy(
        max_attempts=LOCK_TRIES,
        wait=LOCK_WAIT,  # type: ignore[arg-type]  # typed int; it becomes timedelta(seconds=)
        # a lost database connection too: each try claims only rows still pending, records
        # only onto rows it still holds, and the final task reconciles the rest
        retry_exceptions={LockedError, Busy, OperationalError, psycopg.OperationalError},
    )

    @tasks.task(name="send_batch", pass_context=True, retry=retry_busy)
    def send_batch(context: JobContext, **batch: Any) -> int:
        return _worker(context).send_batch(Batch.of(batch))

    @tasks.task(name="finish", pass_context=True, retry=retry_busy)
    def finish(context: JobContext, **final: Any) -> str:
        return _worker(context).finish(Batch.of(final))

    @tasks.periodic(cron="* * * * *", periodic_id="run-due")
    @tasks.task(name="run_due", pass_context=True, queue="digest")
    def run_due(context: JobContext, timestamp: int) -> int:
        return _worker(context).run_due()

    @tasks.periodic(cron="* * * * *", periodic_id="recover")
    @tasks.task(name="recover", pass_context=True, queue="digest")
    async def recover(context: JobContext, timestamp: int) -> int:
        """Jobs of workers whose heartbeat stopped run again (a batch claims nothing twice;
        the final task reconciles what their worker left in `sending`)."""
        manager = context.app.job_manager
        after = _worker(context).stalled_after
        stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=after))
        for job in stalled:
            await manager.retry_job(job)
        return len(stalled)

    return tasks


class Runs(Protocol):
    """What the tasks ask of the process running them (`workers.Worker`)."""

    stalled_after: float

    def send_batch(self, batch: Batch) -> int: ...
    def finish(self, batch: Batch) -> str: ...
    def run_due(self) -> int: ...


def _worker(context: Any) -> Runs:
    worker: Runs = context.additional_context["digest"]
    return worker


@dataclass(frozen=True)
class Batch:
    """The arguments of a batch task (and, without `ids`, of the final task)."""

    edition: str
    fingerprint: str
    transport: str
    strict: bool = False
    send_at: str | None = None  # ISO time (SendGrid scheduled send)
    due: str | None = None  # ISO time (local-time delivery: rows due by then)
    content_key: str = ""
    ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, args: dict[str, Any]) -> Batch:
        """The batch a task's arguments (`_args`) describe."""
        return cls(**{**args, "ids": _expand(args.get("ids", ()))})

    def options(self, size: int = MAX_BATCH) -> sending.SendOptions:
        return sending.SendOptions(
            batch_size=max(1, min(size, MAX_BATCH)),
            strict=self.strict,
            send_at=_when(self.send_at),
            due=_when(self.due),
        )


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- deferring -------------------------------------------------------------------------
class Queue:
    """The task queue in the store's PostgreSQL database."""

    def __init__(self, store: Store) -> None:
        if procrastinate is None:
            raise DigestError("workers need procrastinate", hint="pip install 'digest[postgres]'")
        self.store = store
        url = conninfo(store.engine.url.render_as_string(hide_password=False))
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        self.app.add_tasks_from(_tasks(), namespace="digest")

    def install(self) -> None:
        """Create the queue's tables beside the store's, once; workers starting together
        wait for the one that creates them."""
        engine = self.store.engine

        def installed() -> bool:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
            return bool(found)

        for _ in range(INSTALL_TRIES):
            if installed():
                return
            try:
                with run_lock(engine, "queue-schema", what="installing the task queue"):
                    # again under the lock: another worker may have created them since
                    if not installed():
                        self.app.schema_manager.apply_schema()
                return
            except LockedError:
                time.sleep(0.5)
        raise DigestError("the task queue's tables were not created (another process kept trying)")

    def defer(self, edition: Edition, batch: Batch, size: int) -> Queued:
        """One task per batch of pending rows due by `batch.due`, then the final task."""
        tasks = self.app.tasks
        sender = tasks["digest:send_batch"].configure(queue=send_queue(edition.key))
        jobs, rows = 0, 0
        chunk: list[dict[str, Any]] = []
        for key, ids in self.store.deliveries.batches(edition.key, size, due=_when(batch.due)):
            chunk.append(_args(replace(batch, content_key=key, ids=tuple(ids))))
            jobs, rows = jobs + 1, rows + len(ids)
            if len(chunk) == DEFER_CHUNK:  # workers start on these while the rest is read
                sender.batch_defer(*chunk)
                chunk = []
        if chunk:
            sender.batch_defer(*chunk)
        final = tasks["digest:finish"].configure(
            queue="digest",
            priority=FINAL_PRIORITY,
            queueing_lock=_final_lock(edition.key),  # one final task waits per edition
        )
        with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
            final.defer(**_args(batch))
        return Queued(edition.key, jobs, rows)

    def deliver(
        self,
        edition: Edition,
        *,
        config: Config,
        ledger: DeliveryStore,
        transport: Transport,
        secret: str,
        now: Now,
        options: sending.SendOptions,
        **_unused: Any,
    ) -> Queued:
        """`send.send_edition`'s preparation, then the batches deferred instead of sent.
        An edition whose final task is still waiting is left to the workers as it is."""
        if self.working_on(edition.key):
            return Queued(edition.key, 0, 0, already=True)
        sending.check_options(options, transport, now())
        lifecycle.check_sendable(edition, config.digest(edition.digest))
        with ledger.holding(edition):
            run = sending.open_run(
                edition, config=config, ledger=ledger, transport=transport, secret=secret,
                now=now, options=options,
            )  # fmt: skip
            skipped = sending.prepare(run)
        batch = Batch(
            edition=edition.key,
            fingerprint=fingerprint(edition),
            transport=transport.name,
            strict=options.strict,
            send_at=_iso(options.send_at),
            due=_iso(options.due),
        )
        queued = self.defer(edition, batch, options.batch_size)
        return replace(queued, skipped=skipped, in_doubt=run.in_doubt)

    def working_on(self, edition_key: str) -> bool:
        """Whether the workers still have the edition (its final task waits or runs)."""
        lock = _final_lock(edition_key)
        jobs = self.app.job_manager
        return any(jobs.list_jobs(queueing_lock=lock, status=s) for s in ("todo", "doing"))


def send_queued(
    edition: Edition,
    *,
    config: Config,
    store: Store,
    transport: Transport,
    secret: str,
    now: Now,
    options: sending.SendOptions,
) -> Queued:
    """`digest send --workers`: as `dispatch.send_now`, the edition moves to sending, but its
    batches are deferred to `digest worker` processes; the final task marks it sent."""
    queue = Queue(store)  # refuses a SQLite store before anything else
    lifecycle.check_sendable(edition, config.digest(edition.digest))
    with queue.app.open():
        queue.install()
        note = "queued for the workers with digest send --workers"
        lifecycle.move(store.schedules, edition, lifecycle.SENDING, note=note, now=now())
        return queue.deliver(
            edition, config=config, ledger=store.deliveries, transport=transport,
            secret=secret, now=now, options=options,
        )  # fmt: skip


def _args(batch: Batch) -> dict[str, Any]:
    """A task's arguments: its row ids as runs, `[first, last]` for consecutive ids (a
    planned batch is a few runs: a job row and its log lines stay short)."""
    out = {k: getattr(batch, k) for k in batch.__dataclass_fields__}
    out["ids"] = _runs(batch.ids)
    return out


def _runs(ids: Sequence[int]) -> list[int | list[int]]:
    out: list[int | list[int]] = []
    for i in ids:
        last = out[-1] if out else None
        if isinstance(last, list) and i == last[1] + 1:
            last[1] = i
        elif isinstance(last, int) and i == last + 1:
            out[-1] = [last, i]
        else:
            out.append(i)
    return out


def _expand(runs: Sequence[int | Sequence[int]]) -> tuple[int, ...]:
    """The ids of `_runs` (a plain id stands for itself)."""
    ids: list[int] = []
    for run in runs:
        if isinstance(run, int):
            ids.append(run)
        else:
            first, last = run
            ids.extend(range(first, last + 1))
    return tuple(ids)


def wait_until_sent(store: Store, edition_key: str, *, timeout: float, poll: float = 0.2) -> bool:
    """Whether every row of the edition settled within `timeout` seconds (for scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not store.schedules.unsent(edition_key):
            return True
        time.sleep(poll)
    return False
