"""Structured logs: ``SHUNTER_LOG_FORMAT=json`` makes every process log one JSON object per line."""

from __future__ import annotations

import json
import logging
import os
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def json_logs() -> bool:
    return os.environ.get("SHUNTER_LOG_FORMAT", "text").lower() == "json"


def handler() -> logging.Handler:
    h = logging.StreamHandler()
    h.setFormatter(JsonFormatter() if json_logs() else
                   logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    return h
