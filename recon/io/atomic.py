"""Writing files so that a reader never sees half of one: write to a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffixes); rename it to ``final`` on success.

    On any error the temporary file is removed and ``final`` keeps whatever it held before.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(final.suffixes)
    handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=suffixes, dir=final.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_current_umask())
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
