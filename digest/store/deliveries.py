"""Deliveries in the store."""

from __future__ import annotations

from sqlalchemy import Engine


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
