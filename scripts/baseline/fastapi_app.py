"""The baseline for `panal bench http`: the stack the source projects used, a single
FastAPI process on SQLite, doing the same work as Panal's ping (one SQLite query, a
small JSON answer). Run by scripts/bench-http.sh; never used by Panal itself."""

import os
import sqlite3

from fastapi import FastAPI

DB = os.environ.get("BASELINE_DB", "/tmp/panal-baseline.db")

with sqlite3.connect(DB) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE)")
    conn.execute("INSERT OR IGNORE INTO users (id, username) VALUES (1, 'admin')")

app = FastAPI()
_conn = sqlite3.connect(DB, check_same_thread=False)


@app.get("/api/v1/auth/ping")
def ping():
    (users,) = _conn.execute("SELECT count(*) FROM users").fetchone()
    return {"service": "auth", "node": "fastapi", "worker": "fastapi/auth/0", "users": users}
