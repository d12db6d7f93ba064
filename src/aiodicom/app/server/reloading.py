"""Files the running server reloads: polled by (mtime, size, inode) and on SIGHUP.

A file that does not load keeps what was loaded before in force and logs one error (not
one per poll); at start a bad file is the caller's `ConfigurationError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from aiodicom.errors import ConfigurationError

__all__ = ["PolledFiles"]

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

    def reload(self) -> bool:
        """Read the files again (SIGHUP); on any error keep the previous one in force."""
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
