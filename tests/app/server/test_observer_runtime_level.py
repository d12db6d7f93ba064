"""Hostile review of 7596878/4e8b271: the log observer's wish for requests follows its
logger's level at run time (as before them), alone and in a FanOut: turning DEBUG on in a
running server logs each request again."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aiodicom.aio.client import connect
from aiodicom.aio.events import FanOut, RequestCompleted, ServerEvent
from aiodicom.aio.server import Server
from aiodicom.app.server.logs import LogObserver
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Counter:
    wants_requests = True

    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, event: ServerEvent) -> None:
        if isinstance(event, RequestCompleted):
            self.requests += 1


@pytest.mark.parametrize("fan_out", [False, True])
def test_debug_turned_on_at_run_time_logs_requests(run: Any, fan_out: bool) -> None:
    logger = logging.getLogger("aiodicom.test_runtime_level")
    records = _Records()
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log_observer = LogObserver(logger)
    counter = _Counter()

    async def main() -> None:
        observer = FanOut([log_observer, counter], logger) if fan_out else log_observer
        server = Server(admission=AcceptorPolicy(
            ae_title="ANY", abstract_syntaxes={
                VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)}), observer=observer)
        host, port = await server.listen()
        try:
            async with connect(host, port, called_ae_title="ANY") as assoc:
                assert await assoc.echo() == Status.SUCCESS
                logger.setLevel(logging.DEBUG)  # an operator turns DEBUG on
                assert await assoc.echo() == Status.SUCCESS
        finally:
            await server.close()

    try:
        run(main())
    finally:
        logger.removeHandler(records)
    requests = [m for m in records.messages if "C-ECHO status" in m]
    assert len(requests) == 1, records.messages
    if fan_out:
        assert counter.requests == 2
