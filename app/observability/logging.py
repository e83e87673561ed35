"""structlog for everything: our events, uvicorn's and SQLAlchemy's loggers, one pipeline.

JSON lines when stdout is not a terminal (containers, CI), colour for a person at a
terminal. Every line passes the redaction processor, wherever in it a secret sits.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

import msgspec
import structlog
from opentelemetry import trace
from structlog.typing import FilteringBoundLogger

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


# One cheap search decides whether the substitutions above need to run at all: most
# values (routes, ids, durations) contain none of these.
_MAY_HOLD_SECRET = re.compile(r"(?i)bearer|basic|eyJ|\$argon2|password|token|secret")


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _redact_text(text: str) -> str:
    if not _MAY_HOLD_SECRET.search(text):
        return text
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def redact_query(query: str) -> str:
    """A URL's query string with the value of every secret-named parameter (``token``,
    ``access_token``, ``password``, ...) replaced: the links in mails carry their single-use
    token as ``?token=``, and a query string ends up in traces and proxies' logs."""
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        # Judged by the decoded name, so "to%6Ben" is a token as well.
        parts.append(f"{name}={REDACTED}" if equals and _is_secret_key(unquote_plus(name)) else part)
    return "&".join(parts)


def _redact_sequence(items: list[Any] | tuple[Any, ...]) -> Any:
    # Header lists come as (name, value) pairs: judge the value by the name.
    if len(items) == 2 and isinstance(items[0], str | bytes):
        name = items[0].decode("latin-1") if isinstance(items[0], bytes) else items[0]
        if _is_secret_key(name):
            return (items[0], REDACTED)
    return type(items)(_redact_value(None, item) for item in items)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _is_secret_key(key) and value not in (None, "", REDACTED):
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


def _name_field(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


def drop_color_message(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn attaches an ANSI-coloured copy of its message; the renderer decides colour."""
    event_dict.pop("color_message", None)
    return event_dict


def current_ids() -> tuple[str | None, str | None]:
    """The current request's id and the current trace's id (hex), as log lines carry them."""
    context = trace.get_current_span().get_span_context()
    return current_request_id.get(), trace.format_trace_id(context.trace_id) if context.is_valid else None


def add_correlation_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """request_id of the current request; trace_id and span_id (hex) of the current span."""
    if "request_id" not in event_dict and (request_id := current_request_id.get()) is not None:
        event_dict["request_id"] = request_id
    context = trace.get_current_span().get_span_context()
    if context.is_valid and "trace_id" not in event_dict:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


_encode_json = msgspec.json.Encoder(enc_hook=str)


def _json_dumps(event: Any, **_: Any) -> str:
    return _encode_json.encode(event).decode()


def _renderer(fmt: LogFormat) -> Any:
    use_console = fmt is LogFormat.CONSOLE or (fmt is LogFormat.AUTO and sys.stdout.isatty())
    if use_console:
        return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    return structlog.processors.JSONRenderer(serializer=_json_dumps)


def configure_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """One processor chain and one output for our events and for the standard library's
    loggers (uvicorn, SQLAlchemy, Alembic).

    Our own events take structlog's direct path (no LogRecord, no handler), which matters
    on the hot path: an access line per request. Foreign loggers go through the stdlib
    and structlog's ProcessorFormatter with the same processors and renderer.
    """
    output = stream or sys.stdout
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_correlation_ids,
        structlog.processors.format_exc_info,
        drop_color_message,
        redact_secrets,
    ]
    renderer = _renderer(settings.format)
    structlog.configure(
        processors=[_name_field, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
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


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger for our own events; ``logger`` names its source as stdlib records do."""
    # Lazy (configure_logging may run after import); "logger_name" because get_logger's
    # own signature takes "logger". The field is renamed to "logger" by _name_field.
    logger: FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger
