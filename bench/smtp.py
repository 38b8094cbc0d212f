"""Messages per second of `digest send --transport smtp` to a loopback SMTP sink, against
a minimal rss2email-like loop and (when installed) rss2email itself, in the same run.

The sink is aiosmtpd in a process of its own (it accepts and discards, reading DATA in
blocks), so it does not share a GIL with the sender; each sender runs in a fresh process
too, so its CPU time and peak RSS are its own. The digest runs send the sample edition
(the demo's articles, built in a temp copy of the project) to N synthetic subscribers
spread over its topic mixes, through `send_edition` with a real SQLite ledger; the
reference builds each message from scratch with the email package and sends it with
smtplib.send_message on one connection; rss2email 3.14 (`pip install rss2email==3.14`)
builds each with its own get_message and sends it with its smtp_send, which connects
once per message.

    python bench/smtp.py                          # 5,000 messages, 1 and 4 connections
    python bench/smtp.py --messages 2000 --connections 1 2 4 8 --dkim --no-pipelining
    python bench/smtp.py --messages 1000 --connections 1 4 8 --rtt 5   # a distant server
    python bench/smtp.py --connections 2 4 --reference-messages 1000 --rounds 3  # a busy machine
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/select.py would stand in for the standard library's select module
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.append(str(Path(__file__).resolve().parent))  # last: only for machine.py

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

from machine import describe  # noqa: E402

WEEK = "2026-W48"
EDITION = f"weekly/{WEEK}"
SECRET = "bench-secret-0123456789"
TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")
TIMEOUT = 900  # seconds any child process may take to answer
RSS2EMAIL = "rss2email 3.14"


# -- the sink --------------------------------------------------------------------------
def _sink(conn: Connection, port: int, rtt: float) -> None:
    """aiosmtpd on 127.0.0.1:port that counts and discards; answers "stats" until "stop".

    Stock aiosmtpd reads DATA line by line, ≈ 5 ms of CPU for a 45 KB message, which
    would cap any sender near 200 messages/s on this machine; this sink reads DATA in
    blocks up to the end marker (dot-stuffing keeps it out of the body) and drops it.
    `rtt` seconds before each reply stand for a server across a network.
    """
    import asyncio

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    taken = [0, 0]  # messages, bytes

    class Discarding(SMTP):
        async def push(self, status: Any) -> None:
            if rtt:
                await asyncio.sleep(rtt)
            await super().push(status)

        async def smtp_DATA(self, arg: str) -> None:
            if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
                return
            if self.envelope is None or not self.envelope.rcpt_tos or arg:
                await self.push("503 Error: need RCPT command")
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            last = b"\r\n"  # the DATA command's own line end
            while not last.endswith(b"\r\n.\r\n"):
                block = await self._reader.read(1 << 16)
                if not block:
                    return  # the client went away
                taken[1] += len(block)
                last = (last + block)[-5:]
            taken[0] += 1
            self._set_post_data_state()
            await self.push("250 OK")

    class Offering:
        """Offers PIPELINING, as production servers do (aiosmtpd takes it, unannounced)."""

        async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                              responses: list[str]) -> list[str]:  # fmt: skip
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

    class Sink(Controller):
        def factory(self) -> SMTP:
            return Discarding(self.handler, **self.SMTP_kwargs)

    controller = Sink(Offering(), hostname="127.0.0.1", port=port)
    controller.start()
    conn.send("ready")
    try:
        while conn.poll(TIMEOUT) and conn.recv() == "stats":
            conn.send((taken[0], taken[1], _cpu(), _rss_mib()))
    finally:
        controller.stop()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the project and its audience --------------------------------------------------------
def _project(folder: Path, port: int, subscribers: int) -> Path:
    """The demo project in `folder`, its edition built and approved, N subscribers added."""
    for name in ("digest.yaml", "examples"):
        source = ROOT / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, folder / name)
    config = folder / "digest.yaml"
    text = config.read_text(encoding="utf-8")
    smtp = "  smtp:\n    host: 127.0.0.1\n    port: 587\n    security: starttls\n"
    assert smtp in text, "digest.yaml: delivery.smtp is not as this benchmark expects"
    text = text.replace(smtp, smtp.replace("587", str(port)).replace("starttls", "none"))
    config.write_text(text, encoding="utf-8")
    env = {**os.environ, "DIGEST_SECRET": SECRET}
    for args in (["ingest"], ["build", "weekly", "--week", WEEK],
                 ["edition", "approve", "weekly", "--week", WEEK]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "digest", *args], cwd=folder, env=env,
                       check=True, capture_output=True, timeout=TIMEOUT)  # fmt: skip
    _audience(config, subscribers)
    return config


def _audience(path: Path, n: int) -> None:
    from digest.config import load_config
    from digest.store import open_store
    from digest.store.schema import subscribers

    store = open_store(load_config(path).store_url)
    now = datetime.now(UTC)
    rows = [
        {"email": f"reader{i}@example.org", "name": f"Reader {i}",
         "topics": list(topics), "timezone": "UTC", "locale": "en",
         "status": "active", "status_reason": "", "consent_method": "import",
         "consent_source": "bench", "consent_ip": "", "created_at": now, "updated_at": now}
        for i, topics in enumerate(_mixes(n))
    ]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(subscribers.insert(), rows)
    store.close()


def _mixes(n: int) -> list[tuple[str, ...]]:
    """Each subscriber's topics: 1 to 3 of the six, drawn with a fixed seed (41 mixes)."""
    rng = random.Random(42)
    return [tuple(rng.sample(TOPICS, rng.randint(1, 3))) for _ in range(n)]


def _dkim_key(folder: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                     serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return str(path)


# -- the senders (each in a process of its own) -----------------------------------------
def _digest(path: Path, connections: int, dkim_file: str | None, pipelining: bool = True) -> int:
    """`send_edition` over SMTP with `connections` connections, on a fresh copy of the ledger."""
    from digest import dispatch
    from digest.config import load_config
    from digest.editions import find_edition
    from digest.send import SendOptions
    from digest.store import open_store
    from digest.transports import make_transport

    config = load_config(path)
    smtp = config.delivery.smtp.model_copy(
        update={"connections": connections, "pipelining": pipelining}
    )
    update: dict[str, Any] = {"smtp": smtp}
    if dkim_file is not None:
        from digest.config import DkimSettings

        dkim = DkimSettings(domain="digest.example.com", selector="bench", key_file=dkim_file)
        update["dkim"] = dkim
    config = config.model_copy(update={"delivery": config.delivery.model_copy(update=update)})
    store = open_store(config.store_url)
    edition = find_edition(config, store.editions, "weekly", WEEK)
    now = lambda: datetime.now(UTC)  # noqa: E731
    transport = make_transport("smtp", config, edition_key=edition.key, now=now)
    options = SendOptions(batch_size=config.delivery.batch_size)
    try:
        summary = dispatch.send_now(edition, config=config, store=store, transport=transport,
                                  secret=SECRET, now=now, options=options)  # fmt: skip
    finally:
        transport.close()
        store.close()
    return summary.sent


def _samples(path: Path, n: int) -> list[tuple[str, str, str]]:
    """(subject, html, text) each of the N subscribers receives (their topic mix), links
    filled in; each distinct content rendered once, as digest does, and counted."""
    from digest import compose
    from digest.config import load_config
    from digest.render import PREFERENCES, UNSUBSCRIBE
    from digest.store import open_store

    config = load_config(path)
    store = open_store(config.store_url)
    edition = store.editions.get(EDITION)
    store.close()
    assert edition is not None
    render = compose.default_renderer(config, edition)
    token = "eyJzIjoxLCJlIjoid2Vla2x5LzIwMjYtVzQ4In0.hQXKqHUCxQleQmADSP3u9E0ucK8"
    links = {UNSUBSCRIBE: f"https://digest.example.com/u/{token}",
             PREFERENCES: f"https://digest.example.com/p/{token}"}  # fmt: skip
    done: dict[tuple[str, ...], tuple[str, str, str]] = {}
    out = []
    for topics in _mixes(n):
        mine = tuple(sorted(set(topics) & set(edition.topics())))
        if mine not in done:
            content = render(mine, "A")
            html, text = content.html, content.text
            for placeholder, value in links.items():
                html, text = html.replace(placeholder, value), text.replace(placeholder, value)
            done[mine] = (content.subject, html, text)
        out.append(done[mine])
    return out


def _reference(path: Path, n: int, port: int) -> int:
    """The minimal loop: each message built from scratch, smtplib.send_message, one connection."""
    import smtplib
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    samples = _samples(path, n)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for i, (subject, html, text) in enumerate(samples):
            msg = EmailMessage()
            msg["Message-ID"] = make_msgid(domain="digest.example.com")
            msg["Date"] = format_datetime(datetime.now(UTC))
            msg["From"] = "Prism Weekly <weekly@digest.example.com>"
            msg["To"] = f"Reader {i} <reader{i}@example.org>"
            msg["Subject"] = subject
            msg["List-Unsubscribe"] = f"<https://digest.example.com/u/{i}>"
            msg.set_content(text)
            msg.add_alternative(html, subtype="html")
            smtp.send_message(msg)
    return n


def _rss2email(path: Path, n: int, port: int) -> int:
    """rss2email 3.14's own get_message and smtp send (a connection per message)."""
    from rss2email import config as r2e_config
    from rss2email import email as r2e_email

    samples = _samples(path, n)
    config = r2e_config.Config()
    config.read_dict({"DEFAULT": {**r2e_config.CONFIG["DEFAULT"], "email-protocol": "smtp",
                                  "smtp-server": f"127.0.0.1:{port}",
                                  "from": "weekly@digest.example.com"}})  # fmt: skip
    for i, (subject, html, _text) in enumerate(samples):
        to = f"Reader {i} <reader{i}@example.org>"
        message = r2e_email.get_message(
            "Prism Weekly <weekly@digest.example.com>", to, subject, html, "html",
            extra_headers={"List-Unsubscribe": f"<https://digest.example.com/u/{i}>"},
            config=config,
        )  # fmt: skip
        r2e_email.send(f"reader{i}@example.org", message, config=config)
    return n


def _measured(conn: Connection, profile: str | None, job: Callable[..., int], *args: Any) -> None:
    started, cpu = time.perf_counter(), _cpu()
    if profile:
        import cProfile
        import pstats
        import threading

        # every thread of the sender (the SMTP connections work in threads of their own)
        profilers = [cProfile.Profile()]

        def start(*_: Any) -> None:
            profilers.append(cProfile.Profile())
            profilers[-1].enable()

        threading.setprofile(start)
        with profilers[0]:
            sent = job(*args)
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(profilers[0])
        for other in profilers[1:]:
            other.create_stats()
            stats.add(other)
        stats.dump_stats(profile)
    else:
        sent = job(*args)
    conn.send((sent, time.perf_counter() - started, _cpu() - cpu, _rss_mib()))


def _run(
    ctx: Any,
    sink: Connection,
    label: str,
    job: Callable[..., int],
    *args: Any,
    profile: str | None = None,
) -> float:
    """Run `job` in a fresh process; print its line; return its messages/s."""
    sink.send("stats")
    before = sink.recv()
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_measured, args=(child, profile, job, *args))
    process.start()
    deadline = time.monotonic() + TIMEOUT
    while not parent.poll(1.0):
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{label}: no answer (exit code {process.exitcode})")
    sent, wall, cpu, rss = parent.recv()
    process.join(timeout=30)
    sink.send("stats")
    after = sink.recv()
    got, size = after[0] - before[0], after[1] - before[1]
    rate, kib, sink_cpu = sent / wall, size / max(got, 1) / 1024, after[2] - before[2]
    print(f"{label:<40} {sent:>6,} {wall:>8.1f} {rate:>8.0f} {cpu * 1000 / sent:>9.2f} "
          f"{rss:>8.0f} {got:>7,} {kib:>6.1f} {sink_cpu:>7.1f}")  # fmt: skip
    if got != sent:
        print(f"  the sink took {got} messages, not {sent}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per sender")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4],
                        help="digest runs, one per number of SMTP connections")  # fmt: skip
    parser.add_argument("--dkim", action="store_true", help="add a digest run that signs")
    parser.add_argument("--no-pipelining", action="store_true",
                        help="add a digest run that waits for each answer")  # fmt: skip
    parser.add_argument("--reference-messages", type=int, help="messages for the references")
    parser.add_argument("--rounds", type=int, default=1, help="run every sender this often")
    parser.add_argument("--profile", help="write cProfile stats of the last digest run here")
    parser.add_argument("--rtt", type=float, default=0.0,
                        help="ms the sink waits before each reply (a remote server)")  # fmt: skip
    args = parser.parse_args()
    n, ref_n = args.messages, args.reference_messages or args.messages
    ctx = mp.get_context("spawn")
    port = _free_port()
    sink, child = ctx.Pipe()
    server = ctx.Process(target=_sink, args=(child, port, args.rtt / 1000), daemon=True)
    server.start()
    if not sink.poll(60):
        raise SystemExit("the SMTP sink did not start")
    sink.recv()
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-smtp-"))
    print(f"machine: {describe()}")
    try:
        config = _project(folder, port, n)
        db = folder / "digest.db"
        print(f"sample edition {EDITION}: {n:,} subscribers; sink: aiosmtpd in its own process"
              f", {args.rtt:g} ms before each reply\n")  # fmt: skip
        print(f"{'sender':<40} {'sent':>6} {'seconds':>8} {'msg/s':>8} {'CPU ms/msg':>9} "
              f"{'RSS MiB':>8} {'sink got':>7} {'KiB/msg':>6} {'sink CPU s':>7}")  # fmt: skip
        jobs: list[tuple[str, Callable[..., int], tuple[Any, ...]]] = [
            (f"digest, {k} connection(s)", _digest, (config, k, None)) for k in args.connections
        ]
        best = max(args.connections)
        if args.no_pipelining:
            jobs.append((f"digest, {best} connection(s), no pipelining", _digest,
                         (config, best, None, False)))  # fmt: skip
        if args.dkim:
            jobs.append((f"digest, {best} connection(s), DKIM", _digest,
                         (config, best, _dkim_key(folder))))  # fmt: skip
        jobs.append(("minimal loop (email + smtplib)", _reference, (config, ref_n, port)))
        try:
            import rss2email  # noqa: F401

            jobs.append((RSS2EMAIL, _rss2email, (config, ref_n, port)))
        except ImportError:
            print("rss2email: not installed (pip install rss2email==3.14) - not measured")
        # Rounds alternate the senders, so a change in the machine's load between runs
        # weighs on each of them; the medians are compared.
        rates: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
        for _ in range(args.rounds):
            for label, job, job_args in jobs:
                shutil.copy(db, folder / "fresh.db")  # each run sends the edition from scratch
                profile = args.profile if label == jobs[len(args.connections) - 1][0] else None
                rates[label].append(_run(ctx, sink, label, job, *job_args, profile=profile))
                shutil.copy(folder / "fresh.db", db)
        median = {label: statistics.median(r) for label, r in rates.items()}
        digest_runs = {k: v for k, v in median.items() if k.startswith("digest")}
        best_label = max(digest_runs, key=lambda k: digest_runs[k])
        best_rate, reference = median[best_label], median["minimal loop (email + smtplib)"]
        rss = median.get(RSS2EMAIL)
        what = "median msg/s of" if args.rounds > 1 else "msg/s of"
        print(f"\nbest digest run ({best_label}, {what} {args.rounds} round(s)): "
              f"{best_rate / reference:.1f}x the minimal loop"
              + (f", {best_rate / rss:.1f}x rss2email" if rss else ""))  # fmt: skip
    finally:
        sink.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
