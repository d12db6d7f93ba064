"""Hostile review of the text log's "stored" line (logs.info_line, 48cbb40): a field a peer
chooses (its certificate subject, spaceless) cannot forge a line or drive the terminal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from aiodicom.aio.association import AssociationInfo
from aiodicom.app.server.logs import (
    AssociationContext,
    TextFormatter,
    association_fields,
    info_line,
)


class _Subject:  # a client certificate's subject as rfc4514_string gives it: \n, ESC raw
    subject = "CN=CT01\n2026-12-04T10:00:00,000_INFO_aiodicom:_forged\x1b[2J\u2028"


INFO = AssociationInfo(id=7, calling_ae_title="CT01", called_ae_title="PACS",
                       peer_address=("10.1.2.3", 5000), identity=_Subject())


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger("aiodicom")
    saved = (root.handlers[:], root.level, root.propagate)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    handler.addFilter(AssociationContext())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    yield out
    root.handlers[:], root.level, root.propagate = saved


@pytest.mark.parametrize("direct", [True, False])
def test_a_certificate_subject_cannot_forge_a_log_line(stream: io.StringIO,
                                                       direct: bool) -> None:
    """The subject's newline, ESC and U+2028 came out raw in the text line (written
    directly or by logging): a second, forged line and a terminal escape. Now the value is
    written as its repr, one line, nothing unprintable."""
    log = logging.getLogger("aiodicom.app.server.run")
    if not direct:  # a logger filter: logging builds the record and formats it
        log.addFilter(lambda record: True)
    try:
        info_line(log, "association %d: stored %s from %r (%d bytes)",
                  (7, "1.2.3.4", "CT01", 2048), association_fields(INFO))
    finally:
        log.filters.clear()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text[:-1].isprintable(), repr(text)
    assert "subject='CN=CT01\\n2026-12-04T" in text
