"""Apply the Alembic migrations shipped inside the package.

Several processes may start at once (``serve --workers``, many instances); the upgrade
runs under a PostgreSQL advisory lock, or a file lock beside the SQLite database, so only
one migrates and the others find the schema current.
"""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from payguard.private_files import make_private_dir
from payguard.store.engine import null_pool_engine

__all__ = ["alembic_config", "migrate"]

MIGRATIONS = Path(__file__).parent / "migrations"
_ADVISORY_KEY = 0x70617967  # "payg"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_KEY})
        connection.commit()
    try:
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
    finally:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_KEY})
            connection.commit()


def _lock_beside(db_path: Path) -> Any:
    """An exclusive file lock next to the SQLite file (blocks until the holder is done)."""
    make_private_dir(db_path.parent)
    lock_file = open(db_path.with_suffix(".migrate.lock"), "w")  # held by the caller
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    return lock_file


async def migrate(url: str) -> None:
    """Bring the database at ``url`` (async-driver form) to the newest schema."""
    lock_file: Any = None
    if url.startswith("sqlite"):
        db_path = Path(url.split(":///", 1)[1])
        lock_file = await asyncio.to_thread(_lock_beside, db_path)
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()
