"""structlog for everything: our events, uvicorn's and SQLAlchemy's loggers, one pipeline.

JSON lines when stdout is not a terminal (containers, CI), colour for a person at a
terminal. Every line passes the redaction processor, wherever in it a secret sits.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from app.observability.request_id import current_request_id
from app.settings import LogFormat, LoggingSettings

REDACTED = "[REDACTED]"
# Keys whose values are secrets wherever they appear (headers, bodies, event fields).
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|authorization|cookie|api[_-]?key|credential|private[_-]?key)", re.I
)
# Secrets inside free text: bearer credentials, JWTs, "password=..." fragments.
_SECRET_IN_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s'\",)]+"), REDACTED),
    (re.compile(r"(?i)((?:password|token|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&}]+"), r"\1" + REDACTED),
]


def _redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact_sequence(items: list[Any] | tuple[Any, ...]) -> Any:
    # Header lists come as (name, value) pairs: judge the value by the name.
    if len(items) == 2 and isinstance(items[0], str | bytes):
        name = items[0].decode("latin-1") if isinstance(items[0], bytes) else items[0]
        if _SECRET_KEY.search(name):
            return (items[0], REDACTED)
    return type(items)(_redact_value(None, item) for item in items)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key) and value not in (None, "", REDACTED):
        return REDACTED
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        redacted = _redact_text(text)
        return value if redacted == text else redacted
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _redact_sequence(value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: passwords, tokens, Authorization and Cookie values never reach the output."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key if key != "event" else None, event_dict[key])
    return event_dict


def drop_color_message(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn attaches an ANSI-coloured copy of its message; the renderer decides colour."""
    event_dict.pop("color_message", None)
    return event_dict


def add_correlation_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """request_id of the current request; trace_id and span_id (hex) of the current span."""
    if "request_id" not in event_dict and (request_id := current_request_id.get()) is not None:
        event_dict["request_id"] = request_id
    context = trace.get_current_span().get_span_context()
    if context.is_valid and "trace_id" not in event_dict:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _renderer(fmt: LogFormat) -> Any:
    use_console = fmt is LogFormat.CONSOLE or (fmt is LogFormat.AUTO and sys.stdout.isatty())
    if use_console:
        return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Route structlog and the standard library's loggers through one processor chain."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_correlation_ids,
        structlog.processors.format_exc_info,
        drop_color_message,
        redact_secrets,
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(settings.format)],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Their handlers go; their records reach the root handler above. uvicorn's own access
    # log is replaced by ours (one line per request with route, ids and duration).
    for name in ("uvicorn", "uvicorn.error", "litestar", "sqlalchemy", "alembic"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    logging.getLogger("sqlalchemy.engine").setLevel(settings.sql_level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
