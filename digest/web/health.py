"""`GET /healthz`: the process answers and the store is reachable."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from digest.web.context import web

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    if not web().store.ping():
        return jsonify({"status": "error", "store": "unreachable"}), 503
    return jsonify({"status": "ok", "store": "ok"}), 200
