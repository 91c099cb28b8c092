#!/usr/bin/python3
# app.py — the realistic guest's application: a small HTTP key-value service on 127.0.0.1:8080
# backed by an sqlite database (WAL) on the root disk. It exists to give a handoff demo a guest
# whose RAM (Python heap, sqlite cache, page cache) and disk (database, WAL) change the way a
# real service's do. Installed by guest/build-realistic.sh as /opt/handoff/app.py.
#
#   PUT  /kv/<key>      body = value        -> 204
#   GET  /kv/<key>                          -> 200 value | 404
#   GET  /stats                             -> JSON {"rows": n, "bytes": n, "served": n}
#   GET  /check                             -> 200 "ok" | 500 reason   (PRAGMA quick_check)
import http.server
import json
import os
import sqlite3
import sys
import threading

DB = os.environ.get("HANDOFF_APP_DB", "/var/lib/handoff-app/app.db")
PORT = int(os.environ.get("HANDOFF_APP_PORT", "8080"))
local = threading.local()
served = 0
served_lock = threading.Lock()


def db():
    c = getattr(local, "db", None)
    if c is None:
        c = sqlite3.connect(DB, timeout=30, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA cache_size=-16384")
        local.db = c
    return c


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", ctype="application/octet-stream"):
        global served
        with served_lock:
            served += 1
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_PUT(self):
        if not self.path.startswith("/kv/"):
            return self.reply(404)
        n = int(self.headers.get("Content-Length", "0"))
        value = self.rfile.read(n)
        db().execute("INSERT OR REPLACE INTO kv(k, v, n) VALUES (?, ?, ?)",
                     (self.path[4:], value, len(value)))
        self.reply(204)

    def do_GET(self):
        if self.path.startswith("/kv/"):
            row = db().execute("SELECT v FROM kv WHERE k = ?", (self.path[4:],)).fetchone()
            return self.reply(200, row[0]) if row else self.reply(404)
        if self.path == "/stats":
            rows, size = db().execute("SELECT count(*), coalesce(sum(n), 0) FROM kv").fetchone()
            body = json.dumps({"rows": rows, "bytes": size, "served": served}).encode()
            return self.reply(200, body, "application/json")
        if self.path == "/check":
            r = db().execute("PRAGMA quick_check").fetchone()[0]
            return self.reply(200 if r == "ok" else 500, r.encode(), "text/plain")
        self.reply(404)


def main():
    os.makedirs(os.path.dirname(DB), exist_ok=True)
    c = sqlite3.connect(DB)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB, n INTEGER)")
    c.commit()
    c.close()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    srv.daemon_threads = True
    print("handoff-app: serving on 127.0.0.1:%d, db %s" % (PORT, DB), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
