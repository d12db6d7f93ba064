"""The certificate console: a web page (aiohttp + Jinja2, imported only when used) to enrol
modalities, download their bundles, revoke certificates and watch live associations.

See docs/console.md. `start_console` runs it in the loop of `aiodicom serve --console`;
`aiodicom console --pki DIR [HOST:]PORT` runs it alone.
"""

from __future__ import annotations

from aiodicom.app.console.service import (
    Console,
    ConsoleSettings,
    add_subparser,
    parse_console_address,
    start_console,
)

__all__ = ["Console", "ConsoleSettings", "add_subparser", "parse_console_address",
           "start_console"]
