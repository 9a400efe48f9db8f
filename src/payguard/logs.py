"""Logging for every entry point: one JSON object per line on stderr."""

from __future__ import annotations

import logging
from typing import Any

import orjson

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """A record as one JSON object; a record's ``fields`` dict is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                                   "logger": record.name, "msg": record.getMessage()}
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        # orjson: a line is written for every request, so the serializer is on the hot path.
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("payguard")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
