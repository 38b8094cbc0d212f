"""`GET /healthz`: the process answers and the store is reachable."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from digest.web.context import web

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        with web().store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return jsonify({"status": "error", "store": "unreachable"}), 503
    return jsonify({"status": "ok", "store": "ok"}), 200
