"""`digest worker`: processes sharing the sending of editions queued on PostgreSQL
(`taskqueue`: what `digest send --workers` defers, and the tasks).

`digest worker` processes, any number on any machine that reaches the database, run the
queued tasks. A batch task holds the edition's lock *shared*, so workers send side by side while a
send, an edit, a cancel or the final task (each exclusive) waits for the batches in flight.
It reads its rows still pending, composes them and goes through `batch.send_batch`: the
ledger claim (which only takes rows still pending, so a task run twice sends nothing
twice), the provider call, and the same settling rules as an in-process send.

A worker killed mid-batch leaves its rows in `sending`, and the database releases its lock.
The final task runs once no batch task is waiting, takes the lock exclusive (so only when
no batch is in flight) and runs `send.prepare` again, which reconciles those rows: in
strict mode their provider batch is cancelled and the rows are deferred again; otherwise
they become failed, in doubt, as after a crashed in-process send. Once nothing is left, the
edition moves to sent. Periodic tasks run `digest run-due` every minute (its sends are
deferred the same way) and hand jobs of workers that stopped answering to others.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from digest import compose, dispatch, lifecycle, runner
from digest import send as sending
from digest.batch import send_batch as batch_send
from digest.bulk import bulk_gc
from digest.config import Config
from digest.editions import Edition
from digest.errors import UsageError
from digest.store import Store
from digest.store.locks import LockedError, edition_lock
from digest.taskqueue import LOCK_WAIT, MAX_BATCH, Batch, Busy, Now, Queue, fingerprint, send_queue
from digest.transports import make_transport
from digest.transports.base import Transport


@dataclass
class Worker:
    """What a worker process's tasks share (passed to them as procrastinate context)."""

    config: Config
    store: Store
    queue: Queue
    secret: str
    now: Now = lambda: datetime.now(UTC)
    stalled_after: float = 30.0
    renderers: dict[str, compose.Renderer] = field(default_factory=dict)  # by fingerprint
    # by key: (stored data, edition, fingerprint) as last read
    editions: dict[str, tuple[dict[str, Any], Edition, str]] = field(default_factory=dict)

    def _renderer(self, edition: Edition, key: str) -> compose.Renderer:
        """One renderer per edition for the process's life: each content renders once here,
        not once per batch (the MJML compile and the Jinja render cost more than a batch's
        ledger moves)."""
        if key not in self.renderers:
            if len(self.renderers) >= 4:  # a worker outlives many editions
                self.renderers.clear()
            self.renderers[key] = functools.lru_cache(maxsize=1024)(
                compose.default_renderer(self.config, edition)
            )
        return self.renderers[key]

    def _transport(self, name: str, edition: Edition) -> Transport:
        return make_transport(name, self.config, edition_key=edition.key, now=self.now)

    def _edition(self, batch: Batch) -> Edition | None:
        """The batch's edition as the store has it (one read, its state with it); None when
        it was cancelled meanwhile. Parsing and fingerprinting are done once per content."""
        stored = self.store.editions.stored(batch.edition)
        known = self.editions.get(batch.edition)
        if stored is not None and (known is None or known[0] != stored[0]):
            if len(self.editions) >= 4:  # a worker outlives many editions
                self.editions.clear()
            edition = Edition.from_dict(stored[0])
            known = stored[0], edition, fingerprint(edition)
            self.editions[batch.edition] = known
        if stored is None or known is None or known[2] != batch.fingerprint:
            raise UsageError(
                f"edition {batch.edition} changed or was removed since its send was queued",
                hint="run digest send --workers again: it reads the edition as it is now",
            )
        return None if stored[1] == lifecycle.CANCELLED else known[1]

    def send_batch(self, batch: Batch) -> int:
        """Send the batch's rows still pending; returns how many were sent."""
        with edition_lock(self.store.engine, batch.edition, shared=True):
            edition = self._edition(batch)
            rows = edition and self.store.deliveries.pending_of(batch.edition, batch.ids)
            if edition is None or not rows:
                return 0  # run before (a task handed out again), or cancelled
            transport = self._transport(batch.transport, edition)
            try:
                run = sending.open_run(
                    edition, config=self.config, ledger=self.store.deliveries,
                    transport=transport, secret=self.secret, now=self.now,
                    options=batch.options(len(rows)),
                    render=self._renderer(edition, batch.fingerprint),
                )  # fmt: skip
                recipients = compose.recipients(rows, links=run.links, edition_key=edition.key)
                content = run.cache.get(batch.content_key)
                email = compose.compose(content, recipients, config=self.config, edition=edition)
                batch_send(run, email)
            finally:
                transport.close()
        return run.sent

    def finish(self, batch: Batch) -> str:
        """Reconcile what killed workers left in `sending`, defer what that put back to
        pending, and mark the edition sent once nothing is left."""
        edition = self._edition(batch)
        if edition is None:
            return "cancelled"
        waiting = self.queue.app.job_manager.list_jobs(queue=send_queue(edition.key), status="todo")
        if waiting:
            raise Busy(f"{len(waiting)} batch tasks of {edition.key} still waiting")
        transport = self._transport(batch.transport, edition)
        try:
            with self.store.deliveries.holding(edition):
                run = sending.open_run(
                    edition, config=self.config, ledger=self.store.deliveries,
                    transport=transport, secret=self.secret, now=self.now,
                    options=batch.options(),
                )  # fmt: skip
                sending.prepare(run)
        finally:
            transport.close()
        if run.withdrawn:
            queued = self.queue.defer(edition, batch, MAX_BATCH)
            return f"{run.withdrawn} batches cancelled and deferred again ({queued.rows} rows)"
        done = dispatch.finish(self.store, edition, now=self.now())
        return "sent" if done else "rows left pending: run digest send --workers again"

    def run_due(self) -> int:
        """`digest run-due`, its sends deferred to the workers; returns the actions taken."""

        def transport(edition: Edition) -> Transport:
            return self._transport(self.config.delivery.transport, edition)

        run = runner.Runner(
            config=self.config, store=self.store, make_transport=transport,
            secret=self.secret, now=self.now, deliver=self.queue.deliver,
        )  # fmt: skip
        try:
            return len(runner.run_due(run))
        except LockedError:
            return 0

    def run(self, *, concurrency: int = 1, heartbeat: float = 10.0) -> None:
        """Run tasks until SIGTERM or Ctrl-C (a batch in flight is finished first)."""
        with self.queue.app.open():
            self.queue.install()
        with bulk_gc():  # a worker's life is bulk work: batch after batch
            self._run_worker(concurrency, heartbeat)

    def _run_worker(self, concurrency: int, heartbeat: float) -> None:
        self.queue.app.run_worker(
            concurrency=concurrency,
            additional_context={"digest": self},
            update_heartbeat_interval=heartbeat,
            fetch_job_polling_interval=LOCK_WAIT,  # a task retried after LOCK_WAIT: no notice
            stalled_worker_timeout=self.stalled_after,
            install_signal_handlers=True,
        )
