"""Structured logging for every sf311 process: one JSON object (or one logfmt line) per record."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from sf311.settings import Settings

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged too.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Chatty libraries whose INFO lines say nothing an operator needs.
_QUIET = ("py4j", "urllib3", "httpx", "kafka", "alembic")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        return json.dumps(_fields(record), default=str)


class LogfmtFormatter(logging.Formatter):
    """Formats a record as key=value pairs, quoted where needed, for a human at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a logfmt line."""
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\n'):
        return text
    return json.dumps(text)


def configure_logging(settings: Settings) -> None:
    """Send the root logger's records to stderr in the configured format and level."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
