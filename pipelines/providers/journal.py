"""A durable job journal in SQLite: what was submitted where, so a paid video is never lost.

One row per job fingerprint (the hash of provider, model and every parameter), updated in place.
A run first *claims* the row (an owner token and a lease it renews), so two ComfyUI processes, or
ComfyUI and a script, sharing the user directory never submit the same job twice: the second one
waits for the first's result instead. The row is written *before* the submit (phase SUBMITTING),
gets the request id as soon as the provider answers (PENDING), and every status change after; an
`events` table keeps the history. Only the owner may write a row. No key, header or image data is
ever stored: only ids, URLs the provider returned, statuses.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .errors import ClaimLost

# Phases of a row.
NEW = "new"                  # claimed, nothing sent yet
SUBMITTING = "submitting"    # written before the POST; seen on a later run it means "may exist remotely"
UNCERTAIN = "uncertain"      # the POST may have reached the provider, no request id: never resubmitted
SYNC = "sync"                # a synchronous call (answered with the video itself) started: it may be billed
REJECTED = "rejected"        # the provider answered the POST with an error: nothing was created
PENDING = "pending"          # request id known, waiting for the result
RESULT = "result"            # result known (media URL recorded), not yet in the cache
DONE = "done"                # the video is in the local cache
FAILED = "failed"            # the remote job failed (or timed out remotely)
FLAGGED = "flagged"          # the provider flagged the output (NSFW): replayed, not re-billed
CANCELLED = "cancelled"      # cancelled on the user's interrupt
EXPIRED = "expired"          # the provider no longer has the result

RESUBMITTABLE = frozenset({NEW, REJECTED, FAILED, CANCELLED, EXPIRED})
MAYBE_BILLED = frozenset({SUBMITTING, UNCERTAIN, SYNC})  # paid again only when the user turns on resubmit

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
    updated_at REAL NOT NULL,
    owner TEXT,
    lease_until REAL
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
    owner: str | None = None        # the run that holds the row (None: free)
    lease_until: float | None = None  # the owner's claim lapses after this (epoch seconds) unless renewed


_COLUMNS = [f for f in JobRow.__dataclass_fields__]


def new_owner() -> str:
    """A token naming this run: host, process id, and a random part (two runs in one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_gone(owner: str) -> bool:
    """True when the owner ran on this host in a process that no longer exists (killed: its claim is void at
    once instead of when its lease lapses). psutil, which ComfyUI itself requires, checks the process on
    every OS (os.kill(pid, 0) would terminate it on Windows)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


_ADDED_COLUMNS = {"owner": "TEXT", "lease_until": "REAL"}  # journals written by earlier versions lack them
BUSY_TIMEOUT_S = 30.0


class Journal:
    """Thread- and process-safe; every write is its own committed transaction (durable before the next request).

    WAL mode is set once, when the file is opened first; every connection waits up to
    BUSY_TIMEOUT_S for a lock held by another process instead of failing with "database is locked".
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._lock, self._connect() as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._set_wal(db)
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    try:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise

    @staticmethod
    def _set_wal(db: sqlite3.Connection) -> None:
        """Switching the journal mode needs the only lock on the file, and SQLite answers "locked" at once
        (without its busy handler) when another process holds one: wait and try again."""
        end = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > end:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
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
            return self._read(db, fingerprint)

    @staticmethod
    def _read(db: sqlite3.Connection, fingerprint: str) -> JobRow | None:
        row = db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE fingerprint=?", (fingerprint,)).fetchone()
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row))
        values["state"] = json.loads(values["state"] or "{}")
        return JobRow(**values)

    def claim(self, fingerprint: str, owner: str, lease_s: float, *, provider: str, model: str, base_url: str,
              seed: int | None) -> tuple[JobRow, bool]:
        """Take the row for `owner` atomically: (row, True), inserting a NEW row when there is none; or
        (row, False) when another owner's lease is still running (that run is doing this very job)."""
        now = time.time()
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = self._read(db, fingerprint)
            if row is not None and row.owner not in (None, owner) and (row.lease_until or 0) > now \
                    and not owner_gone(row.owner):
                db.execute("ROLLBACK")
                return row, False
            if row is None:
                row = JobRow(fingerprint, provider, model, base_url, NEW, seed=seed, created_at=now, updated_at=now,
                             owner=owner, lease_until=now + lease_s)
                db.execute(f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                           [json.dumps(row.state) if c == "state" else getattr(row, c) for c in _COLUMNS])
            else:
                row.owner, row.lease_until = owner, now + lease_s
                db.execute("UPDATE jobs SET owner=?, lease_until=? WHERE fingerprint=?",
                           (owner, row.lease_until, fingerprint))
            db.execute("COMMIT")
        return row, True

    def renew(self, row: JobRow, lease_s: float) -> None:
        """Extend the owner's lease (the runner does this in the background while it works)."""
        until = time.time() + lease_s
        with self._lock, self._connect() as db:
            db.execute("UPDATE jobs SET lease_until=? WHERE fingerprint=? AND owner=?",
                       (until, row.fingerprint, row.owner))
        row.lease_until = until

    def release(self, row: JobRow) -> None:
        """Give the row up (a waiting run may take it over at once)."""
        with self._lock, self._connect() as db:
            db.execute("UPDATE jobs SET owner=NULL, lease_until=NULL WHERE fingerprint=? AND owner=?",
                       (row.fingerprint, row.owner))

    def restart(self, row: JobRow, seed: int | None) -> JobRow:
        """Reset the owned row in place for a new submit attempt (phase SUBMITTING)."""
        now = time.time()
        return self.update(row, "submit started", phase=SUBMITTING, request_id=None, remote_status=None, state={},
                           seed=seed, video_path=None, video_sha256=None, error=None, created_at=now, force_event=True)

    def update(self, row: JobRow, detail: str | None = None, *, force_event: bool = False, **changes) -> JobRow:
        """Write `changes` to the row in place, only while `row.owner` still holds it (else ClaimLost),
        and log an event when phase, remote status or request id changed."""
        changed = force_event or any(changes.get(k, getattr(row, k)) != getattr(row, k)
                                     for k in ("phase", "remote_status", "request_id"))
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = time.time()
        names = [*changes, "updated_at"]
        values = [json.dumps(row.state) if c == "state" else getattr(row, c) for c in names]
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            assignments = ",".join(c + "=?" for c in names)
            cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE fingerprint=? AND owner IS ?",
                                [*values, row.fingerprint, row.owner])
            if cursor.rowcount != 1:
                db.execute("ROLLBACK")
                raise ClaimLost(f"{row.provider}: another process took over this job [request id {row.request_id}]; "
                                "it finishes it, and queuing the same job again serves its result",
                                provider=row.provider, request_id=row.request_id)
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
