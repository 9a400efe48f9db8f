"""Files only this user can read, private from the moment they exist.

A file created world-readable and chmod'ed afterwards can be opened by another local user
in between (and the open stays valid). So the processes set a ``0o077`` umask before they
create anything (SQLite and its WAL files included), and secrets are written through
``os.open`` with mode ``0o600`` into a fresh file that replaces the old one atomically.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "make_private_dir", "restrict_umask", "write_private"]

PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    """Every file and directory this process creates from now on: owner-only."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700. An existing directory is left as it
    is: it is the operator's, and may be shared on purpose."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, created with that mode (never widened)."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
