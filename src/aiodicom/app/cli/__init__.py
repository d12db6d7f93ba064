"""The `aiodicom` command line: parsing (`main`) and the client commands (`client`)."""

from __future__ import annotations

from aiodicom.app.cli.main import main

__all__ = ["main"]
