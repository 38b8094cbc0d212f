"""Run a command beside a throwaway PostgreSQL server: `python tests/pgserver.py CMD...`.

`-c NAME=VALUE` before the command sets a server option (any number of times), e.g.
`-c shared_preload_libraries=pg_stat_statements` to see where the server's time goes.

The server listens on a free loopback port with its data in a temp dir, and is stopped
and deleted when the command ends, whether it passed or not. The command finds it in
DIGEST_TEST_POSTGRES (a SQLAlchemy URL of an empty database). PostgreSQL refuses to run
as root, so under root the server runs as the `postgres` user. Debian's `postgresql`
package is installed only where no `initdb` can be found.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "DIGEST_TEST_POSTGRES"
COMMAND_TIMEOUT = 3600  # seconds for the command run beside the server
START_TIMEOUT = 60  # seconds for pg_ctl to see the server accept connections
STOP_TIMEOUT = 60
DATABASE = "digest_test"


def find_bin() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(versions[-1]).parent if versions else None


def install() -> Path:
    if os.geteuid() != 0:
        sys.exit("pgserver: no initdb; install PostgreSQL (Debian: apt-get install postgresql)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postgresql"],
        check=True,
        timeout=900,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = find_bin()
    if found is None:
        sys.exit("pgserver: initdb still not found after installing postgresql")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_server_user(args: list[str]) -> list[str]:
    # initdb and postgres refuse root; Debian's package made the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _stop_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the `finally` that stops the server


def split_settings(args: list[str]) -> tuple[list[str], list[str]]:
    """The `-c NAME=VALUE` options before the command, and the command."""
    settings: list[str] = []
    while len(args) >= 2 and args[0] == "-c":
        if "=" not in args[1]:
            sys.exit(f"pgserver: -c {args[1]}: expected NAME=VALUE")
        settings.append(args[1])
        args = args[2:]
    return settings, args


def main(args: list[str]) -> int:
    settings, command = split_settings(args)
    if not command:
        sys.exit("usage: python tests/pgserver.py [-c NAME=VALUE]... COMMAND [ARGS...]")
    signal.signal(signal.SIGTERM, _stop_on_term)
    bindir = find_bin() or install()
    root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
    data, sockets = root / "data", root / "run"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        for d in (data, sockets):
            shutil.chown(d, "postgres", "postgres")
    port = free_port()
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run(
            as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]  # fmt: skip
            ),
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
        options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"
        options += "".join(f" -c {setting}" for setting in settings)
        subprocess.run(
            as_server_user(
                [
                    *pg_ctl,
                    "-o",
                    options,
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "start",
                ]  # fmt: skip
            ),
            check=True,
            timeout=START_TIMEOUT + 10,
            stdout=subprocess.DEVNULL,
        )
        started = True
        subprocess.run(
            as_server_user(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    DATABASE,
                ]  # fmt: skip
            ),
            check=True,
            timeout=60,
        )
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
        print(f"pgserver: PostgreSQL ({bindir.parent.name}) on 127.0.0.1:{port}", flush=True)
        env = {**os.environ, ENV: url}
        return subprocess.run(command, env=env, timeout=COMMAND_TIMEOUT).returncode
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = root / "server.log"
        if log.exists():
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
        print(f"pgserver: {exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            subprocess.run(
                as_server_user([*pg_ctl, "-m", "fast", "-w", "-t", str(STOP_TIMEOUT), "stop"]),
                timeout=STOP_TIMEOUT + 10,
                stdout=subprocess.DEVNULL,
            )
        for _ in range(3):  # the server may still be releasing files a moment after stop
            shutil.rmtree(root, ignore_errors=True)
            if not root.exists():
                break
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
