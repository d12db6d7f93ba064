"""Files the running server reloads: polled by (mtime, size, inode) and on SIGHUP.

A file that does not load keeps what was loaded before in force and logs one error (not
one per poll); at start a bad file is the caller's `ConfigurationError`.

SIGHUP goes through `CoalescedReload`: a burst of N signals is one reload on the event loop,
and that reload rebuilds only what changed on disk (a TLS context, a policy), as the trust
mirrors' `wake` coalesces fetches. Touch a file to force its reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from aiodicom.errors import ConfigurationError

__all__ = ["CoalescedReload", "PolledFiles"]

log = logging.getLogger("aiodicom.serve")

_Signature = tuple[tuple[int, int, int] | None, ...]


class PolledFiles:
    """Base of a reloadable thing made from ``paths``: subclasses say how to `_load` it."""

    what = "files"
    """Named in the log lines ("policy", "user identity files")."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._signature = self._stat()

    def _stat(self) -> _Signature:
        found: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                found.append(None)
            else:
                found.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(found)

    def maybe_reload(self) -> bool:
        """Reload if a file's (mtime, size, inode) changed; True when the new one is in force."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature  # a bad file is reported once, not on every poll
        return self.reload()

    def reload_changed(self) -> bool:
        """SIGHUP: `maybe_reload` (this class polls with no interval to wait)."""
        return self.maybe_reload()

    def reload(self) -> bool:
        """Read the files again (a trust mirror changed); on any error keep the previous one
        in force."""
        try:
            summary = self._load()
        except ConfigurationError as exc:
            log.error("%s not reloaded, the previous one stays in force: %s", self.what, exc)
            return False
        self._signature = self._stat()
        log.info("%s reloaded from %s%s", self.what, ", ".join(map(str, self._paths)), summary)
        return True

    def _load(self) -> str:
        """Load the files and put the result in force; returns a summary for the log."""
        raise NotImplementedError


class CoalescedReload:
    """The SIGHUP handler: at most one reload pending; N signals before it runs are one.

    The reload runs at the loop's next turn and calls ``reload_changed`` (each part rebuilds
    only if its files changed), so a burst costs one stat per file, not N TLS rebuilds on
    the event loop. ``wake`` (the trust mirrors' fetch-now, itself coalesced) is passed on
    at every signal."""

    def __init__(self, reload_changed: Callable[[], object] | None,
                 wake: Callable[[], None] | None = None) -> None:
        self._reload_changed = reload_changed
        self._wake = wake
        self._pending = False
        self.signals = 0
        """SIGHUPs received."""
        self.runs = 0
        """Reloads run (each one after one or more signals)."""

    def __call__(self) -> None:
        self.signals += 1
        if self._wake is not None:
            self._wake()
        if self._reload_changed is None or self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._pending = False  # a signal from now on needs (and gets) another turn
        self.runs += 1
        assert self._reload_changed is not None
        try:
            self._reload_changed()
        except ConfigurationError as exc:
            log.warning("trust files not reloaded: %s", exc)
        except Exception:  # a signal handler must never take the server down
            log.exception("reload after SIGHUP failed; the previous files stay in force")
