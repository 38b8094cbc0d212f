"""Throughput and peak memory of `digest subscribers import` and `export` on large lists.

Generates subscriber files with a fixed seed (CSV at each size, YAML at the first), then
runs the real CLI in a child process for each step, timing it and reading the child's
own peak RSS and CPU time (wait4). In the same run, a minimal loader (csv.reader,
lower-cased address, sqlite3 executemany in chunks of 2,000 into the same table, no
checks) gives the floor. The machine is shared, so wall figures move with its load: CPU
microseconds a row, and the import's CPU over the floor's, are the steadier figures.

    python bench/subscribers.py                       # 200,000 and 1,000,000 rows
    python bench/subscribers.py --rows 50000          # quick look
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py would shadow the standard `select` module (subprocess needs it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))  # last: only for machine.py

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import NamedTuple  # noqa: E402

from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "America/Sao_Paulo")
PROVIDERS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "gmx.de",
             "proton.me")  # fmt: skip
OTHER_DOMAINS = 3000  # 40 % of addresses are spread over these
FIRST = ("ana", "ben", "chloe", "daniel", "emi", "farah", "gus", "hana", "ivan", "jo")
CHILD_TIMEOUT = 1800  # seconds any one step may take


def _subscriber(rng: random.Random, i: int) -> tuple[str, str, list[str], str, str]:
    first = rng.choice(FIRST)
    if rng.random() < 0.6:
        domain = rng.choice(PROVIDERS)
    else:
        k = rng.randrange(OTHER_DOMAINS)
        domain = f"mail{k}.example{k % 97}.org"
    topics = rng.sample(TOPICS, rng.randint(1, 3))
    return (f"{first}.reader{i}@{domain}", f"{first.title()} Reader {i}", topics,
            rng.choice(ZONES), rng.choice(("en", "en-GB", "de", "pt-BR")))  # fmt: skip


def write_csv(path: Path, n: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["email", "name", "topics", "timezone", "locale", "status"])
        for i in range(n):
            email, name, topics, zone, locale = _subscriber(rng, i)
            writer.writerow([email, name, ";".join(topics), zone, locale, "active"])


def write_yaml(path: Path, n: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        out.write("subscribers:\n")
        for i in range(n):
            email, name, topics, zone, locale = _subscriber(rng, i)
            out.write(f"  - email: {email}\n    name: {name}\n    topics: [{', '.join(topics)}]\n"
                      f"    timezone: {zone}\n    locale: {locale}\n")  # fmt: skip


class Step(NamedTuple):
    seconds: float  # wall
    rss: float  # the child's peak RSS, MiB
    cpu: float  # the child's CPU seconds, user and system


def _run(args: list[str], cwd: Path) -> Step:
    """Run a child to its end (killed past CHILD_TIMEOUT): wall, peak RSS and CPU time."""
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(CHILD_TIMEOUT, child.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        watchdog.cancel()
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {child.returncode}:\n{err[-2000:]}")
    return Step(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def _digest(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "digest", "--config", str(project / "digest.yaml"), *args]


def _project(folder: Path) -> Path:
    project = folder / "project"
    project.mkdir()
    text = (ROOT / "digest.yaml").read_text(encoding="utf-8")
    lines = [("store: sqlite:///digest.db" if ln.startswith("store:") else ln)
             for ln in text.splitlines()]  # fmt: skip
    (project / "digest.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project


def _fresh(project: Path) -> None:
    for name in ("digest.db", "digest.db-wal", "digest.db-shm"):
        (project / name).unlink(missing_ok=True)


def minimal_loader(csv_path: str, db_path: str) -> None:
    """The floor: read CSV, lower-case the address, insert with executemany; no checks."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S.000000")
    sql = (
        "INSERT INTO subscribers (email, name, topics, digests, timezone, locale, status, "
        "status_reason, consent_at, consent_method, consent_source, consent_ip, created_at, "
        "updated_at) VALUES (?, ?, ?, 'null', ?, ?, ?, '', ?, 'import', ?, '', ?, ?)"
    )
    source = Path(csv_path).name
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        batch: list[tuple[str, ...]] = []
        for email, name, topics, zone, locale, status in reader:
            batch.append((email.lower(), name, json.dumps(topics.split(";")), zone, locale,
                          status, stamp, source, stamp, stamp))  # fmt: skip
            if len(batch) == 2000:
                with conn:
                    conn.executemany(sql, batch)
                batch = []
        with conn:
            conn.executemany(sql, batch)
    conn.close()


def _line(what: str, rows: int, step: Step, floor: Step | None = None) -> None:
    ratio = f" ({step.cpu / floor.cpu:.2f}x the floor's CPU)" if floor else ""
    print(f"{what:<34} {rows:>9,} rows {step.seconds:7.1f} s {rows / step.seconds:>9,.0f} rows/s "
          f"peak RSS {step.rss:6.0f} MiB  CPU {step.cpu * 1e6 / rows:5.1f} µs/row{ratio}  "
          f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--no-yaml", action="store_true", help="skip the YAML file")
    parser.add_argument("--minimal-loader", nargs=2, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal_loader:
        minimal_loader(*args.minimal_loader)
        return
    print(f"machine: {describe()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-subscribers-"))
    os.environ.setdefault("DIGEST_SECRET", "bench-secret-0123456789")
    try:
        project = _project(folder)
        _run(_digest(project, "db", "upgrade"), project)
        for index, n in enumerate(args.rows):
            data = folder / f"list-{n}.csv"
            write_csv(data, n)
            _fresh(project)
            _run(_digest(project, "db", "upgrade"), project)
            floor = _run([sys.executable, __file__, "--minimal-loader", str(data),
                          str(project / "digest.db")], project)  # fmt: skip
            _line("minimal loader (floor), CSV", n, floor)
            _fresh(project)
            step = _run(_digest(project, "subscribers", "import", str(data)), project)
            _line("digest subscribers import, CSV", n, step, floor)
            step = _run(_digest(project, "subscribers", "import", str(data)), project)
            _line("  again (every row unchanged)", n, step, floor)
            out = folder / "export.csv"
            step = _run(_digest(project, "subscribers", "export", "-o", str(out)), project)
            _line("digest subscribers export, CSV", n, step)
            if index == 0 and not args.no_yaml:
                step = _run(
                    _digest(project, "subscribers", "export", "--format", "yaml", "-o",
                            str(folder / "export.yaml")), project)  # fmt: skip
                _line("digest subscribers export, YAML", n, step)
                yml = folder / f"list-{n}.yaml"
                write_yaml(yml, n)
                _fresh(project)
                step = _run(_digest(project, "subscribers", "import", str(yml)), project)
                _line("digest subscribers import, YAML", n, step)
            data.unlink()
        print(f"machine at the end: load {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
