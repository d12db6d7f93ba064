"""The bundled server's default-loop TLS read buffer is one TLS record (16 KiB)."""

from __future__ import annotations

import asyncio.sslproto

from aiodicom.aio.loop import limit_default_loop_tls_buffers


def test_default_tls_buffer_is_one_record() -> None:
    before = asyncio.sslproto.SSLProtocol.max_size
    try:
        limit_default_loop_tls_buffers()
        assert asyncio.sslproto.SSLProtocol.max_size == 16 * 1024
    finally:
        asyncio.sslproto.SSLProtocol.max_size = before
