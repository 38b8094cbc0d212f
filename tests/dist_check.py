"""`make dist-check`: the wheel works on its own, outside this repository.

Builds the wheel, installs it into a new virtualenv in a temp dir, runs `digest init` in
an empty folder there, runs the commands it prints (ingest, import, build, send to the
outbox), starts `digest serve`, and checks that /subscribe and the one-click unsubscribe
link of a sent email answer 200. Every child process has a timeout; the temp dir goes.
"""

from __future__ import annotations

import email
import email.policy
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 600  # seconds for a build or an install
SERVE_TIMEOUT = 30  # seconds for `digest serve` to print its address
SHIPPED = ("digest/templates/weekly.mjml", "digest/templates/web/base.html",
           "digest/scaffold/digest.yaml", "digest/store/migrations/env.py")  # fmt: skip


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, check=True, text=True, timeout=STEP_TIMEOUT, **kw)  # type: ignore[call-overload, no-any-return]


def fetch(url: str, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        raise SystemExit(1)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="digest-dist-"))
    serve: subprocess.Popen[str] | None = None
    try:
        run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(ROOT)],
            stdout=subprocess.DEVNULL)  # fmt: skip
        wheel = next((work / "dist").glob("digest-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
        check(all(n in names for n in SHIPPED), f"{wheel.name} has templates, scaffold, migrations")
        run([sys.executable, "-m", "venv", str(work / "venv")])
        bin_dir = work / "venv" / "bin"
        run([str(bin_dir / "pip"), "install", "-q", str(wheel)])
        # A clean environment: nothing from this repository or its settings leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        site = work / "site"
        site.mkdir()
        printed = run(["digest", "init"], cwd=site, env=env, capture_output=True).stdout
        print(printed)
        commands = printed.split("Next, run:\n", 1)[1].split("\n\n", 1)[0].split("\n")
        commands = [c.strip() for c in commands]
        check(commands[-1] == "digest serve", "init prints the commands, ending with serve")
        script = "set -euo pipefail\n" + "\n".join(commands[:-1])
        done = run(["bash", "-c", script], cwd=site, env=env, capture_output=True)
        print(done.stdout)
        check("failed 0" in done.stdout, "the printed commands ran, the send failed nothing")
        secret = next(c for c in commands if c.startswith("export DIGEST_SECRET="))
        env["DIGEST_SECRET"] = secret.split("=", 1)[1]

        serve = subprocess.Popen(
            ["digest", "serve", "--port", "0"], cwd=site, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = _served_at(serve)
        status, body = fetch(f"{base}/subscribe")
        check(status == 200 and "<form" in body, f"GET /subscribe answers {status}")

        sent = sorted((site / "outbox").rglob("*.eml"))
        check(bool(sent), f"the outbox holds {len(sent)} emails")
        message = email.message_from_bytes(sent[0].read_bytes(), policy=email.policy.default)
        header = str(message["List-Unsubscribe"])
        link = re.search(r"<(https?://[^>]+/u/[^>]+)>", header)
        check(link is not None, f"List-Unsubscribe: {header[:60]}…")
        assert link is not None
        path = urlsplit(link.group(1)).path
        status, body = fetch(base + path)
        check(status == 200, f"GET the one-click page {path[:24]}… answers {status}")
        status, body = fetch(base + path, data=b"List-Unsubscribe=One-Click")
        check(status == 200, f"POST List-Unsubscribe=One-Click answers {status}")
        print("dist-check: the wheel installs, starts a project, sends and serves")
        return 0
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(timeout=10)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def _served_at(serve: subprocess.Popen[str]) -> str:
    """The address `digest serve` printed; it picks a free port with --port 0."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert serve.stdout is not None
        for line in serve.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + SERVE_TIMEOUT
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen += lines.get(timeout=0.5)
        except queue.Empty:
            if serve.poll() is not None:
                break
            continue
        found = re.search(r"on (http://[\d.]+:\d+)", seen)
        if found:
            return found.group(1)
    check(False, f"digest serve printed its address (got: {seen!r})")
    raise AssertionError


if __name__ == "__main__":
    sys.exit(main())
