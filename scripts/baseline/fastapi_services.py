"""The baseline for `panal bench services`: the stack the source projects used, a single
FastAPI process on one SQLite file, serving the same routes with the same JSON shapes as
Panal for the three measured mixes (book list, order placement, reading batches) plus what
seeding needs (register, login, create book, create device). Run by
scripts/bench-services.sh through `panal bench services --baseline-python`; never used by
Panal itself.

How it differs from Panal, on purpose or for brevity:

- One uvicorn process with one worker. Handlers are plain `def`, so FastAPI runs them in
  its thread pool; each thread keeps its own SQLite connection.
- SQLite in WAL mode with its default `synchronous=FULL`: a write is on disk when it is
  acknowledged, as an acknowledged Panal write is in a quorum's log. Write transactions
  queue on a lock in this process before taking SQLite's write lock: SQLite's own busy
  wait sleeps and polls, which measured slightly fewer writes/s and a p99 5 to 10 times
  longer. A 30 s busy timeout remains as a safety net.
- Bearer tokens are simplified: login returns a random token kept in a dict in this
  process, and every protected route looks the token up there (one dict lookup) instead
  of verifying a JWT signature and checking revocation as Panal does. Passwords are
  stored as salted SHA-256 rather than argon2 (neither is on a measured path).
- Orders: one `BEGIN IMMEDIATE` transaction checks and decrements the stock, inserts the
  order and its first history event, and answers 409 `out_of_stock` when too few are left.
- Readings: one transaction with `executemany` of an insert-or-replace per reading.
- Errors have Panal's shape: `{"error": {"code", "message", "request_id"}}`.
"""

import hashlib
import os
import secrets
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import List, Optional

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

DB = os.environ.get("BASELINE_DB", "/tmp/panal-services-baseline.db")
RESERVATION_MS = 15 * 60 * 1000
MAX_QUANTITY = 100
MAX_BATCH = 10_000
CURRENCIES = ("EUR", "USD", "GBP")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    email TEXT, role TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS books (
    id INTEGER PRIMARY KEY, seller_id INTEGER NOT NULL, title TEXT NOT NULL, author TEXT NOT NULL,
    description TEXT NOT NULL, price_cents INTEGER NOT NULL, currency TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0), created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS books_author ON books (author COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, book_id INTEGER NOT NULL, buyer_id INTEGER NOT NULL,
    seller_id INTEGER NOT NULL, quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,
    created_ms INTEGER NOT NULL, reserved_until_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS orders_buyer ON orders (buyer_id, id);
CREATE TABLE IF NOT EXISTS order_events (
    order_id INTEGER NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, at_ms INTEGER NOT NULL,
    note TEXT, PRIMARY KEY (order_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    device_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, consumption_kwh REAL, generation_kwh REAL,
    PRIMARY KEY (device_id, ts_ms)) WITHOUT ROWID;
"""

with sqlite3.connect(DB) as _setup:
    _setup.execute("PRAGMA journal_mode=WAL")
    _setup.executescript(SCHEMA)

_local = threading.local()


def db() -> sqlite3.Connection:
    """This thread's connection (autocommit; transactions are explicit)."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        _local.conn = conn
    return conn


# SQLite has one writer at a time, and a writer that finds the lock taken sleeps and polls
# (the busy timeout), which under many threads leaves the lock idle between sleeps. Writers
# of this process queue on this lock instead, so the write lock is handed over at once.
_write_lock = threading.Lock()


@contextmanager
def transaction(conn: sqlite3.Connection):
    with _write_lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: Optional[int]) -> Optional[str]:
    if ms is None:
        return None
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> Optional[int]:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return int(t.timestamp() * 1000)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


app = FastAPI()


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": uuid.uuid4().hex}}
    return JSONResponse(body, status_code=status)


@app.exception_handler(ApiError)
def _api_error(_: Request, e: ApiError):
    return _error(e.status, e.code, e.message)


@app.exception_handler(RequestValidationError)
def _validation_error(_: Request, e: RequestValidationError):
    return _error(400, "validation_failed", str(e.errors())[:500])


# Simplified bearer tokens: token -> (user id, role), held in this process only.
TOKENS: dict = {}


def caller(authorization: Optional[str]) -> int:
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "unauthorized", "missing bearer token")
    who = TOKENS.get(authorization[7:])
    if who is None:
        raise ApiError(401, "invalid_token", "unknown token")
    return who[0]


def password_hash(password: str, salt: str) -> str:
    return salt + "$" + hashlib.sha256((salt + password).encode()).hexdigest()


class RegisterRequest(BaseModel):
    username: str
    password: str
    email: Optional[str] = None


class LoginRequest(BaseModel):
    username: str
    password: str


@app.post("/api/v1/auth/register", status_code=201)
def register(req: RegisterRequest):
    if not (8 <= len(req.password) <= 256) or not req.username.strip():
        raise ApiError(400, "validation_failed", "username required, password 8 to 256 characters")
    conn, now = db(), now_ms()
    try:
        with transaction(conn):
            cur = conn.execute(
                "INSERT INTO users (username, password_hash, email, role, created_ms) VALUES (?, ?, ?, 'user', ?)",
                (req.username, password_hash(req.password, secrets.token_hex(8)), req.email, now),
            )
    except sqlite3.IntegrityError:
        raise ApiError(409, "username_taken", f"{req.username!r} is taken")
    return {"id": cur.lastrowid, "username": req.username, "email": req.email, "role": "user",
            "created_at": rfc3339(now)}


@app.post("/api/v1/auth/login")
def login(req: LoginRequest):
    row = db().execute("SELECT id, password_hash, role FROM users WHERE username = ?", (req.username,)).fetchone()
    if row is None or password_hash(req.password, row[1].split("$", 1)[0]) != row[1]:
        raise ApiError(401, "bad_credentials", "wrong username or password")
    token = secrets.token_urlsafe(32)
    TOKENS[token] = (row[0], row[2])
    return {"access_token": token, "token_type": "Bearer", "expires_in": 3600}


# ---- catalog ---------------------------------------------------------------------------

BOOK_COLUMNS = """b.id, b.seller_id, coalesce(u.username, ''), b.title, b.author, b.description,
    b.price_cents, b.currency, b.stock, b.created_ms, b.updated_ms"""


def book_json(r) -> dict:
    return {"id": r[0], "seller_id": r[1], "seller": r[2], "title": r[3], "author": r[4], "description": r[5],
            "price_cents": r[6], "currency": r[7], "stock": r[8], "created_at": rfc3339(r[9]),
            "updated_at": rfc3339(r[10])}


class NewBook(BaseModel):
    title: str
    author: str
    description: str = ""
    price_cents: int
    currency: str
    stock: int


@app.post("/api/v1/books", status_code=201)
def create_book(b: NewBook, authorization: Optional[str] = Header(None)):
    seller = caller(authorization)
    if not b.title.strip() or not b.author.strip() or b.price_cents < 1 or b.currency not in CURRENCIES \
            or not (0 <= b.stock <= 1_000_000):
        raise ApiError(400, "validation_failed", "invalid listing")
    conn, now = db(), now_ms()
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO books (seller_id, title, author, description, price_cents, currency, stock, created_ms,"
            " updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seller, b.title.strip(), b.author.strip(), b.description, b.price_cents, b.currency, b.stock, now, now),
        )
        row = conn.execute(
            f"SELECT {BOOK_COLUMNS} FROM books b LEFT JOIN users u ON u.id = b.seller_id WHERE b.id = ?",
            (cur.lastrowid,),
        ).fetchone()
    return book_json(row)


def like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@app.get("/api/v1/books")
def list_books(q: Optional[str] = None, author: Optional[str] = None, limit: int = 20,
               cursor: Optional[str] = None):
    if not (1 <= limit <= 100):
        raise ApiError(400, "validation_failed", "limit: must be 1 to 100")
    try:
        after = int(cursor) if cursor else 0
    except ValueError:
        raise ApiError(400, "validation_failed", "cursor: not a cursor returned by this list")
    pattern = like_pattern(q.strip()) if q and q.strip() else None
    rows = db().execute(
        f"""SELECT {BOOK_COLUMNS} FROM books b LEFT JOIN users u ON u.id = b.seller_id
            WHERE b.deleted = 0 AND b.id > ?1
              AND (?2 IS NULL OR b.title LIKE ?2 ESCAPE '\\' OR b.author LIKE ?2 ESCAPE '\\'
                   OR b.description LIKE ?2 ESCAPE '\\')
              AND (?3 IS NULL OR b.author = ?3 COLLATE NOCASE)
            ORDER BY b.id LIMIT ?4""",
        (after, pattern, author.strip() if author else None, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    items = [book_json(r) for r in rows[:limit]]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}


class NewOrder(BaseModel):
    book_id: int
    quantity: int


@app.post("/api/v1/orders", status_code=201)
def create_order(o: NewOrder, authorization: Optional[str] = Header(None)):
    buyer = caller(authorization)
    if not (1 <= o.quantity <= MAX_QUANTITY):
        raise ApiError(400, "validation_failed", f"quantity: must be 1 to {MAX_QUANTITY}")
    conn, now = db(), now_ms()
    with transaction(conn):
        book = conn.execute(
            "SELECT seller_id, price_cents, currency, stock, title FROM books WHERE id = ? AND deleted = 0",
            (o.book_id,),
        ).fetchone()
        if book is None:
            raise ApiError(404, "not_found", f"no book {o.book_id}")
        seller_id, price, currency, stock, title = book
        if seller_id == buyer:
            raise ApiError(422, "own_listing", "you cannot buy your own listing")
        reserved = conn.execute(
            "UPDATE books SET stock = stock - ?2 WHERE id = ?1 AND deleted = 0 AND stock >= ?2",
            (o.book_id, o.quantity),
        ).rowcount
        if reserved == 0:
            raise ApiError(409, "out_of_stock", f"only {stock} of {title!r} left, {o.quantity} requested")
        order_id = conn.execute(
            "INSERT INTO orders (book_id, buyer_id, seller_id, quantity, unit_price_cents, currency, status,"
            " created_ms, reserved_until_ms) VALUES (?, ?, ?, ?, ?, ?, 'pending_payment', ?, ?)",
            (o.book_id, buyer, seller_id, o.quantity, price, currency, now, now + RESERVATION_MS),
        ).lastrowid
        conn.execute(
            "INSERT INTO order_events (order_id, seq, event, at_ms, note) VALUES (?, 0, 'pending_payment', ?, NULL)",
            (order_id, now),
        )
    return {"id": order_id, "book_id": o.book_id, "book_title": title, "buyer_id": buyer, "seller_id": seller_id,
            "quantity": o.quantity, "unit_price_cents": price, "total_cents": price * o.quantity,
            "currency": currency, "status": "pending_payment", "created_at": rfc3339(now),
            "reserved_until": rfc3339(now + RESERVATION_MS), "paid_at": None, "card": None, "shipment": None,
            "invoice_number": None,
            "history": [{"event": "pending_payment", "at": rfc3339(now), "note": None}]}


# ---- energy ----------------------------------------------------------------------------

class NewDevice(BaseModel):
    name: str
    kind: str


@app.post("/api/v1/devices", status_code=201)
def create_device(d: NewDevice, authorization: Optional[str] = Header(None)):
    owner = caller(authorization)
    if not d.name.strip() or len(d.name) > 100 or d.kind not in ("meter", "solar", "battery", "other"):
        raise ApiError(400, "validation_failed", "name: required, at most 100 characters; kind: meter, solar, "
                                                 "battery or other")
    conn, now = db(), now_ms()
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO devices (owner_id, name, kind, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?)",
            (owner, d.name.strip(), d.kind, now, now),
        )
    return {"id": cur.lastrowid, "owner_id": owner, "name": d.name.strip(), "kind": d.kind,
            "created_at": rfc3339(now), "updated_at": rfc3339(now)}


class ReadingInput(BaseModel):
    ts: str
    consumption_kwh: Optional[float] = None
    generation_kwh: Optional[float] = None


class ReadingsBatch(BaseModel):
    readings: List[ReadingInput]


def valid_value(v: Optional[float]) -> bool:
    return v is None or 0.0 <= v <= 1_000_000.0


@app.post("/api/v1/devices/{device_id}/readings", status_code=201)
def add_readings(device_id: int, batch: ReadingsBatch, authorization: Optional[str] = Header(None)):
    owner = caller(authorization)
    if not (1 <= len(batch.readings) <= MAX_BATCH):
        raise ApiError(400, "validation_failed", f"readings: send 1 to {MAX_BATCH} readings")
    rows, seen = [], set()
    for i, r in enumerate(batch.readings):
        ts = parse_rfc3339(r.ts)
        if ts is None:
            raise ApiError(400, "validation_failed", f"readings[{i}].ts: must be an RFC 3339 timestamp")
        if (r.consumption_kwh is None and r.generation_kwh is None) or not valid_value(r.consumption_kwh) \
                or not valid_value(r.generation_kwh):
            raise ApiError(400, "validation_failed", f"readings[{i}]: values must be 0 to 1000000 kWh")
        if ts in seen:
            raise ApiError(400, "validation_failed", f"readings[{i}].ts: appears twice in the batch")
        seen.add(ts)
        rows.append((device_id, ts, r.consumption_kwh, r.generation_kwh))
    conn = db()
    with transaction(conn):
        device = conn.execute("SELECT owner_id FROM devices WHERE id = ?", (device_id,)).fetchone()
        if device is None or device[0] != owner:
            raise ApiError(404, "not_found", f"no device {device_id}")
        conn.executemany(
            "INSERT OR REPLACE INTO readings (device_id, ts_ms, consumption_kwh, generation_kwh) VALUES (?, ?, ?, ?)",
            rows,
        )
    return {"device_id": device_id, "stored": len(rows)}
