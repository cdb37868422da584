"""One writer per output folder: an advisory lock that a second ``recon run`` or ``recon batch`` into the same
folder meets and is refused by, with a message. The operating system drops it when its holder exits, even
when killed, so no stale lock survives a crash."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from recon.errors import OutputBusyError

LOCK_FILE = ".recon.lock"


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration; raise ``OutputBusyError`` at once if another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise OutputBusyError(f"{folder}: another recon process is writing into this folder; wait for it to "
                                  "finish or choose another output folder") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
