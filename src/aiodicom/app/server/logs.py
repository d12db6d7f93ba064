"""Log formats for `aiodicom serve`, and association context on every association log line.

Association lines carry ``assoc_id``, ``peer``, ``calling_ae``, ``called_ae`` and
``subject`` (certificate subject, "" on plain TCP) as `logging` record attributes: the JSON
formatter writes them as fields, the text formatter appends them as ``key=value``. They come
from `association_fields` passed as ``extra=`` (our own lines, `LogObserver`) or, for the
library's ``"association %d..."`` lines, from `AssociationContext`, a filter that looks the
id up among the associations `LogObserver` has seen accepted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    AssociationRefused,
    RequestCompleted,
    ServerEvent,
)

__all__ = [
    "ASSOCIATION_FIELDS",
    "AssociationContext",
    "JsonFormatter",
    "LogObserver",
    "TextFormatter",
    "association_fields",
    "configure_logging",
    "info_line",
    "installed_context",
]

ASSOCIATION_FIELDS = ("assoc_id", "peer", "calling_ae", "called_ae", "subject")

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def format_peer(address: tuple[str, int] | None) -> str:
    if address is None:
        return ""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def association_fields(info: AssociationInfo) -> dict[str, Any]:
    """The ``extra=`` for a log line about ``info``'s association."""
    identity = info.identity
    return {
        "assoc_id": info.id,
        "peer": format_peer(info.peer_address),
        "calling_ae": info.calling_ae_title,
        "called_ae": info.called_ae_title,
        "subject": getattr(identity, "subject", "") if identity is not None else "",
    }


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


class _SecondCache(logging.Formatter):
    """`formatTime` that formats each second once (time.strftime is most of a record's cost)."""

    _second: tuple[int, str | None] | None = None
    _text = ""

    def formatTime(self, record: logging.LogRecord,  # noqa: N802 - logging's name
                   datefmt: str | None = None) -> str:
        return self.stamp(record.created, record.msecs, datefmt)

    def stamp(self, created: float, msecs: float, datefmt: str | None = None) -> str:
        """`formatTime` of a record made at ``created`` (``msecs`` as LogRecord has it)."""
        key = (int(created), datefmt)
        if key != self._second:
            self._text = time.strftime(datefmt or self.default_time_format,
                                       self.converter(created))
            self._second = key
        if datefmt is None:
            return f"{self._text},{int(msecs):03d}"
        return self._text


_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}
"""Line breaks to ``str.splitlines`` that JSON leaves raw (it escapes those below U+0020):
escaped, so a value a peer sent (a name, an error text) cannot split a log line."""


class JsonFormatter(_SecondCache):
    """One JSON object per line: time, level, logger, message, then every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False).translate(_LINE_BREAKS)


class TextFormatter(_SecondCache):
    """The classic line, then ``key=value`` for each ``extra`` field (values repr'd if spaced
    or unprintable: a peer's certificate subject cannot break the line or drive a terminal)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            line = super().format(record)
        else:  # the same line as the format string gives, without its machinery
            record.message = message = record.getMessage()
            record.asctime = asctime = self.formatTime(record)
            line = f"{asctime} {record.levelname} {record.name}: {message}"
        extras = _extras(record)
        if not extras:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{_pairs(extras)}]{newline}{rest}"


def _pairs(extras: dict[str, Any]) -> str:
    return " ".join([  # a list, not a generator: no frame resumed per field
        f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v or not v.isprintable())
        else f"{k}={v}"
        for k, v in extras.items()
    ])


def _plain_text_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The handler `configure_logging` installs, if an INFO record of ``logger`` reaches it
    and nothing else: no logger filter on the way, one `StreamHandler` taking INFO, our
    `TextFormatter`, no filter but `AssociationContext` (which passes a record carrying
    ``assoc_id`` unchanged). Then the line it would write can be written directly."""
    if logging.root.manager.disable >= logging.INFO or logger.disabled:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (type(found) is not logging.StreamHandler or type(found.formatter) is not TextFormatter
            or found.level > logging.INFO
            or any(type(f) is not AssociationContext for f in found.filters)):
        return None
    return found


class AssociationContext(logging.Filter):
    """Adds association fields to library lines that start ``"association %d"``.

    The library's own log calls name the association by id only; this filter (installed on
    the handler) fills the other fields from associations seen accepted and not yet ended.
    """

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[int, dict[str, Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if "assoc_id" in record.__dict__:
            return True
        msg, args = record.msg, record.args
        if (isinstance(msg, str) and msg.startswith("association %d") and isinstance(args, tuple)
                and args and isinstance(args[0], int)):
            fields = self.known.get(args[0])
            if fields is not None:
                record.__dict__.update(fields)
            else:
                record.__dict__["assoc_id"] = args[0]
        return True


class LogObserver:
    """A `Server` observer that logs each association event with its structured fields.

    One INFO line per association, when it ends (who, from where, how, how long, how many
    bytes) and one when one is refused; accepted and each request at DEBUG (the store
    handler logs stored files at INFO). Records below the logger's level are never built.
    """

    def __init__(self, logger: logging.Logger | None = None,
                 context: AssociationContext | None = None) -> None:
        self.log = logger or logging.getLogger("aiodicom.events")
        self.context = context

    @property
    def wants_requests(self) -> bool:
        """Requests are logged only at DEBUG: below it no `RequestCompleted` is built for us
        (`aiodicom.aio.events.wants_requests`, read per request: DEBUG turned on later
        logs the requests after it)."""
        return self.log.isEnabledFor(logging.DEBUG)

    def __call__(self, event: ServerEvent) -> None:
        if isinstance(event, RequestCompleted):
            if self.log.isEnabledFor(logging.DEBUG):
                fields = association_fields(event.info)
                fields.update(service=event.service, status=f"0x{event.status:04X}",
                              sop_class_uid=event.sop_class_uid,
                              sop_instance_uid=event.sop_instance_uid or "",
                              bytes=event.bytes, duration=round(event.duration, 6))
                self.log.debug("association %d: %s status 0x%04X in %.3f s", event.info.id,
                               event.service, event.status, event.duration, extra=fields)
        elif isinstance(event, AssociationAccepted):
            info = event.info
            fields = association_fields(info)
            if self.context is not None:
                self.context.known[info.id] = fields
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug("association %d accepted: %r -> %r from %s", info.id,
                               info.calling_ae_title, info.called_ae_title, fields["peer"],
                               extra=fields)
        elif isinstance(event, AssociationRefused):
            fields = association_fields(event.info)
            fields["reject"] = (f"{event.response.result}/{event.response.source}/"
                                f"{event.response.reason}")
            self.log.info("association %d refused: %s", event.info.id, event.why, extra=fields)
        elif isinstance(event, AssociationEnded):
            self._ended(event)

    def _ended(self, event: AssociationEnded) -> None:
        if event.info is None:
            fields: dict[str, Any] = {"peer": format_peer(event.peer_address)}
            self.log.debug("connection from %s closed, no association established: %s",
                           fields["peer"], event.reason, extra=fields)
            return
        info = event.info
        known = self.context.known.pop(info.id, None) if self.context is not None else None
        if not self.log.isEnabledFor(logging.INFO):
            return
        fields = known if known is not None else association_fields(info)
        fields.update(how="aborted" if event.aborted else "released",
                      bytes_received=event.bytes_received, duration=round(event.duration, 6))
        args = (info.id, fields["how"], event.duration, event.bytes_received,
                info.calling_ae_title, info.called_ae_title, fields["peer"],
                "" if not event.aborted else f": {event.reason}")
        info_line(self.log, _ENDED, args, fields)


_ENDED = "association %d %s after %.3f s, %d bytes received: %r -> %r from %s%s"


def info_line(logger: logging.Logger, msg: str, args: tuple[Any, ...],
              fields: dict[str, Any]) -> None:
    """``logger.info(msg, *args, extra=fields)``, written straight to the handler when only
    `configure_logging`'s text handler would see the record (`_plain_text_handler`): the
    same line for a fraction of the cost. For lines written per association or instance."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _plain_text_handler(logger)
    if handler is None or not _write_line(logger.name, handler, msg, args, fields):
        logger.info(msg, *args, extra=fields)


def _write_line(name: str, handler: logging.StreamHandler[Any], msg: str,
                args: tuple[Any, ...], fields: dict[str, Any]) -> bool:
    """Write the line ``handler`` would write for an INFO record ``msg % args`` of logger
    ``name`` with ``fields``, without building the record: LogRecord, Logger and Handler
    machinery are most of the line's cost. The same text, time stamp and handler lock (the
    formatter's time stamp cache is shared with other threads' records: used under it).
    False if the message spans lines (the formatter puts the fields after its first): the
    caller then logs it. A failed write is reported as emit reports it (`handleError`,
    once) and never retried: the line may be partly written."""
    message = msg % args
    if "\n" in message:
        return False
    created = time.time()
    formatter = handler.formatter
    assert isinstance(formatter, TextFormatter)
    handler.acquire()
    try:
        asctime = formatter.stamp(created, int((created - int(created)) * 1000) + 0.0)
        line = (f"{asctime} {logging.getLevelName(logging.INFO)} {name}: {message} "
                f"[{_pairs(fields)}]{handler.terminator}")
        handler.stream.write(line)
        handler.flush()
    except Exception:
        handler.handleError(logging.getLogger(name).makeRecord(
            name, logging.INFO, "(unknown file)", 0, msg, args, None, extra=fields))
    finally:
        handler.release()
    return True


def configure_logging(fmt: str = "text", level: str = "info") -> AssociationContext:
    """Send ``aiodicom.*`` logs to stderr as text or JSON lines, with association context."""
    import sys

    # Nothing we write uses the caller's file/line, the thread or the process: skip finding
    # them for every record (the logging HOWTO's "Optimization"; ~30% of a record's cost).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    context = AssociationContext()
    handler.addFilter(context)
    root = logging.getLogger("aiodicom")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return context


def installed_context(logger: logging.Logger | None = None) -> AssociationContext | None:
    """The `AssociationContext` `configure_logging` put on the ``aiodicom`` handler, if any."""
    for handler in (logger or logging.getLogger("aiodicom")).handlers:
        for f in handler.filters:
            if isinstance(f, AssociationContext):
                return f
    return None
