"""Exactly once at scale: `digest send` SIGKILLed at random moments against a faulty provider.

The fake SendGrid (in this process, on loopback) answers a few percent of Mail Send
requests with 429 or 500, hangs up after accepting some, and answers some too late for
the client's timeout. A real `digest send` process is started and killed KILLS times at
random moments while requests are in flight, then run to the end. Each mode is run on
its own fresh store; the report counts, from what the provider accepted and did not
withhold: duplicated recipients, missing ones, rows in doubt, batches cancelled, seconds.
The reference line is what the ledger promises: strict 0 duplicates and 0 missing;
default 0 duplicates, and every recipient not delivered listed as a failed row.

    python bench/kill.py                      # 5,000 recipients, 20 kills, both modes
    python bench/kill.py --subscribers 10000 --kills 30 --mode strict
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from editions import make_edition  # noqa: E402
from fake_sendgrid import FakeSendGrid  # noqa: E402

from digest.batch import IN_DOUBT  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.schema import subscribers  # noqa: E402

SECRET = "bench-secret-0123456789"
RUN_TIMEOUT = 600.0  # seconds any one `digest send` may take
# A provider that withholds batches cancelled 10 s ahead (SendGrid: 600 s), so holds lapse
# within the run and the limit of 10 is reached; 30 s leaves a killed run time to restart.
MARGIN, LEAD, TIMEOUT = 10, 30, 1.0
TOPICS = ("politics", "tech")


def _project(folder: Path, url: str, batch: int) -> Path:
    data = yaml.safe_load((ROOT / "digest.yaml").read_text())
    data["store"] = "sqlite:///digest.db"
    delivery = data.setdefault("delivery", {})
    delivery["batch_size"] = batch
    delivery["max_attempts"] = 8
    delivery["sendgrid"] = {
        **delivery.get("sendgrid", {}),
        "host": url,
        "timeout": TIMEOUT,
        "cancel_margin_seconds": MARGIN,
        "strict_lead_seconds": LEAD,
    }
    (folder / "digest.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return folder / "digest.yaml"


def _fill(url: str, n: int) -> list[str]:
    store = open_store(url)
    now = datetime.now(UTC)
    edition = make_edition(2, TOPICS, status="approved")
    store.editions.save(edition)
    rows = [
        {"email": f"reader{i}@example.org", "name": "", "topics": [TOPICS[i % 2]],
         "timezone": "UTC", "locale": "en", "status": "active", "status_reason": "",
         "consent_method": "import", "consent_source": "bench", "consent_ip": "",
         "created_at": now, "updated_at": now}
        for i in range(n)
    ]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(subscribers.insert(), rows)
    store.close()
    return [r["email"] for r in rows]


def _command(config: Path, period: str, strict: bool) -> list[str]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    extra = ["--strict"] if strict else []
    return [sys.executable, "-c", code, "--config", str(config), "send", "weekly", "--week",
            period, "--transport", "sendgrid", *extra]  # fmt: skip


def _run(mode: str, n: int, kills: int, batch: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix=f"digest-kill-{mode}-"))
    fake = FakeSendGrid(cancel_margin=MARGIN).start()
    try:
        fake.set_chaos(random.Random(seed + 1), rate_limit=0.03, server_error=0.03,
                       drop_after_accept=0.03, slow=0.03, slow_seconds=TIMEOUT + 0.5)  # fmt: skip
        config = _project(folder, fake.url, batch)
        url = f"sqlite:///{folder / 'digest.db'}"
        eligible = _fill(url, n)
        period = make_edition(2, TOPICS).period
        env = {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}
        command = _command(config, period, mode == "strict")
        started = time.monotonic()
        landed = 0
        for _ in range(kills):
            seen = len(fake.requests)
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 60
            target = seen + rng.randint(1, 3)
            while len(fake.requests) < target and proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
            proc.wait(timeout=RUN_TIMEOUT)
        final = subprocess.run(command, env=env, capture_output=True, text=True,
                               timeout=RUN_TIMEOUT)  # fmt: skip
        seconds = time.monotonic() - started
        store = open_store(url)
        key = f"weekly/{period}"
        rows = list(store.deliveries.rows(key))
        store.close()
        got = Counter(fake.delivered())
        failed = {r["email"] for r in rows if r["state"] == "failed"}
        missing = set(eligible) - set(got)
        return {
            "recipients": len(eligible),
            "requests": len(fake.answers),
            "kills": landed,
            "duplicates": sum(c - 1 for c in got.values() if c > 1),
            "missing": len(missing),
            "missing_not_listed_failed": len(missing - failed),
            "failed_rows": len(failed),
            "in_doubt_rows": sum(1 for r in rows if (r["last_error"] or "").startswith(IN_DOUBT)),
            "cancels": len(fake.cancelled),
            "cancels_refused": fake.cancels_refused,
            "exit": final.returncode,
            "seconds": round(seconds, 1),
        }
    finally:
        fake.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--mode", choices=["default", "strict", "both"], default="both")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    modes = ["default", "strict"] if args.mode == "both" else [args.mode]
    print(f"machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}")
    print("faults: 3 % each of 429, 500, drop after accept, answer after the timeout")
    ok = True
    for mode in modes:
        figures = _run(mode, args.subscribers, args.kills, args.batch_size, args.seed)
        print(f"{mode:>8}: " + ", ".join(f"{k} {v:,}" for k, v in figures.items()))
        promise = figures["duplicates"] == 0 and (
            figures["missing"] == 0
            if mode == "strict"
            else figures["missing_not_listed_failed"] == 0
        )
        reference = (
            "0 duplicates, 0 missing"
            if mode == "strict"
            else "0 duplicates, every missing recipient a failed row"
        )
        print(f"{'':>8}  reference: {reference}: {'held' if promise else 'BROKEN'}")
        ok = ok and promise
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
