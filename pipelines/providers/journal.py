"""A durable job journal in SQLite: what was submitted where, so a paid video is never lost.

One row per job fingerprint (the hash of provider, model and every parameter). The row is
written *before* the submit (phase SUBMITTING), gets the request id as soon as the provider
answers (PENDING), and every status change after; an `events` table keeps the history.
No key, header or image data is ever stored: only ids, URLs the provider returned, statuses.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Phases of a row.
SUBMITTING = "submitting"    # written before the POST; seen on a later run it means "may exist remotely"
UNCERTAIN = "uncertain"      # the POST may have reached the provider, no request id: never resubmitted
REJECTED = "rejected"        # the provider answered the POST with an error: nothing was created
PENDING = "pending"          # request id known, waiting for the result
RESULT = "result"            # result known (media URL recorded), not yet in the cache
DONE = "done"                # the video is in the local cache
FAILED = "failed"            # the remote job failed (or timed out remotely)
FLAGGED = "flagged"          # the provider flagged the output (NSFW): replayed, not re-billed
CANCELLED = "cancelled"      # cancelled on the user's interrupt
EXPIRED = "expired"          # the provider no longer has the result

RESUBMITTABLE = frozenset({REJECTED, FAILED, CANCELLED, EXPIRED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    fingerprint TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    base_url TEXT NOT NULL,
    phase TEXT NOT NULL,
    request_id TEXT,
    remote_status TEXT,
    state TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    video_path TEXT,
    video_sha256 TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    at REAL NOT NULL,
    phase TEXT NOT NULL,
    remote_status TEXT,
    request_id TEXT,
    detail TEXT
);
"""


@dataclass
class JobRow:
    fingerprint: str
    provider: str
    model: str
    base_url: str
    phase: str
    request_id: str | None = None
    remote_status: str | None = None
    state: dict = field(default_factory=dict)
    seed: int | None = None
    video_path: str | None = None
    video_sha256: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


_COLUMNS = [f for f in JobRow.__dataclass_fields__]


class Journal:
    """Thread-safe; every write is its own committed transaction (durable before the next request)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def get(self, fingerprint: str) -> JobRow | None:
        with self._lock, self._connect() as db:
            row = db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE fingerprint=?", (fingerprint,)).fetchone()
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row))
        values["state"] = json.loads(values["state"] or "{}")
        return JobRow(**values)

    def start(self, fingerprint: str, provider: str, model: str, base_url: str, seed: int | None) -> JobRow:
        """Record a new submit attempt (phase SUBMITTING), replacing a resubmittable earlier row."""
        now = time.time()
        row = JobRow(fingerprint, provider, model, base_url, SUBMITTING, seed=seed, created_at=now, updated_at=now)
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM jobs WHERE fingerprint=?", (fingerprint,))
            db.execute(
                f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                [json.dumps(row.state) if c == "state" else getattr(row, c) for c in _COLUMNS],
            )
            self._event(db, row, "submit started")
            db.execute("COMMIT")
        return row

    def update(self, row: JobRow, detail: str | None = None, **changes) -> JobRow:
        """Apply `changes` to the row and log an event when phase or remote status changed."""
        changed = any(changes.get(k, getattr(row, k)) != getattr(row, k) for k in ("phase", "remote_status", "request_id"))
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = time.time()
        names = [c for c in _COLUMNS if c != "fingerprint"]
        values = [json.dumps(row.state) if c == "state" else getattr(row, c) for c in names]
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"UPDATE jobs SET {','.join(c + '=?' for c in names)} WHERE fingerprint=?", [*values, row.fingerprint])
            if changed or detail:
                self._event(db, row, detail)
            db.execute("COMMIT")
        return row

    def events(self, fingerprint: str) -> list[dict]:
        with self._lock, self._connect() as db:
            rows = db.execute(
                "SELECT at, phase, remote_status, request_id, detail FROM events WHERE fingerprint=? ORDER BY id",
                (fingerprint,),
            ).fetchall()
        return [dict(zip(("at", "phase", "remote_status", "request_id", "detail"), r)) for r in rows]

    @staticmethod
    def _event(db: sqlite3.Connection, row: JobRow, detail: str | None) -> None:
        db.execute(
            "INSERT INTO events (fingerprint, at, phase, remote_status, request_id, detail) VALUES (?,?,?,?,?,?)",
            (row.fingerprint, time.time(), row.phase, row.remote_status, row.request_id, detail),
        )
