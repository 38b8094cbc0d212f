"""Cutting processes' PostgreSQL connections, as a server restart or a network cut does."""

from __future__ import annotations

import psutil
from sqlalchemy import text

from digest.store import Store


def drop_connections(store: Store, pids: list[int]) -> int:
    """Terminate every connection the processes `pids` (and their children) hold to the
    store's database, from the server's side; returns how many were cut."""
    procs = [psutil.Process(pid) for pid in pids]
    procs += [child for proc in list(procs) for child in proc.children(recursive=True)]
    ports = [
        c.laddr.port
        for proc in procs
        for c in proc.net_connections(kind="tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    ]
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND client_port = ANY(:ports)"
    )
    with store.engine.connect() as conn:
        return int(conn.execute(text(query), {"ports": ports}).scalar_one())
