#!/usr/bin/env python3
"""A strict webhook receiver for pgsink's tests (Python standard library only).

    webhook_receiver.py PORT SECRET STORE CONTROL STATS [CERT KEY]

With CERT and KEY it serves HTTPS. A gzip body (Content-Encoding: gzip) is
decompressed first; the signature covers the JSON.

Every request must carry Standard Webhooks headers: webhook-id,
webhook-timestamp (within five minutes) and webhook-signature (v1, HMAC-SHA256
of "id.timestamp.body" with the key of SECRET, "whsec_<base64>"); a request
that does not is refused with 401 and counted. An accepted request's entries
are appended to STORE, one JSON line each, fsynced before the answer; an
entry already stored (same lsn and sequence, or the same Schema entry) is
dropped, as an idempotent receiver does.

CONTROL (a JSON file, read at every request) injects faults:
  {"mode": "ok"}                        answer 200
  {"mode": "503", "retry_after": "1"}   answer 503 with Retry-After
  {"mode": "500"} / "400" / "401"       answer that status
  {"mode": "slow", "seconds": 30}       wait, then answer 200
  {"mode": "reject", "pattern": "x"}    400 if an entry of the batch holds x
  {"mode": "429", "retry_after": "1"}   answer 429 with Retry-After
  {"mode": "reset"}                     close the connection without answering
  {"mode": "apply_then_drop"}           store the entries, then close the
                                        connection without answering
  {"mode": "max_bytes", "bytes": 2000}  413 if the body is larger
  {"mode": "unavailable_if", "pattern": "x"}
                                        503 (Retry-After: 1) if an entry of the
                                        batch holds x, else as "ok"
  any mode, "delay": 0.05               wait that many seconds first
STATS (JSON, rewritten after every request) counts requests, bad
signatures, entries accepted and duplicates dropped, and the most requests
it served at once (max_concurrent).
"""
import base64
import gzip
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time

port, secret, store_path, control_path, stats_path = sys.argv[1:6]
key = base64.b64decode(secret[len("whsec_"):])
stats = {"requests": 0, "bad_signatures": 0, "accepted": 0, "duplicates": 0, "ids": 0,
         "gzip": 0, "authorization": None}
seen = set()
ids = set()
lock = threading.Lock()  # requests are served in threads: one at a time in the store
concurrent = 0


def entry_key(entry):
    if "schema" in entry:
        return ("schema", entry.get("lsn"), json.dumps(entry["schema"], sort_keys=True))
    return (entry.get("lsn"), entry.get("sequence"))


if os.path.exists(store_path):
    with open(store_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                seen.add(entry_key(json.loads(line)))


def control():
    try:
        with open(control_path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"mode": "ok"}


def save_stats():
    tmp = stats_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(stats, f)
    os.replace(tmp, stats_path)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        global concurrent
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with lock:
            concurrent += 1
            stats["max_concurrent"] = max(stats.get("max_concurrent", 0), concurrent)
            save_stats()
        try:
            c = control()
            delay = float(c.get("seconds", 30) if c.get("mode") == "slow" else c.get("delay", 0))
            if delay > 0:
                time.sleep(delay)
            with lock:
                self.serve(body)
        finally:
            with lock:
                concurrent -= 1

    def serve(self, body):
        stats["requests"] += 1
        stats["authorization"] = self.headers.get("Authorization")
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
            stats["gzip"] += 1
        msg_id = self.headers.get("webhook-id", "")
        stamp = self.headers.get("webhook-timestamp", "")
        signature = self.headers.get("webhook-signature", "")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
        if (not msg_id or not fresh or expected not in signature.split(" ")
                or self.headers.get("Idempotency-Key") != msg_id
                or self.headers.get("Content-Type") != "application/json"):
            stats["bad_signatures"] += 1
            save_stats()
            return self.answer(401, b"bad signature")
        c = control()
        mode = c.get("mode", "ok")
        if mode in ("503", "429"):
            save_stats()
            return self.answer(int(mode), b"try later",
                               [("Retry-After", c.get("retry_after", "1"))])
        if mode == "reset":
            stats["resets"] = stats.get("resets", 0) + 1
            save_stats()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if mode in ("500", "400", "401"):
            save_stats()
            return self.answer(int(mode), ("refused: mode " + mode).encode())
        if mode == "max_bytes" and len(body) > int(c.get("bytes", 2000)):
            stats["too_large"] = stats.get("too_large", 0) + 1
            save_stats()
            return self.answer(413, b"too large")
        entries = json.loads(body)["data"]
        if mode == "unavailable_if":
            pattern = c.get("pattern", "")
            if any(pattern in json.dumps(e, ensure_ascii=False) for e in entries):
                stats["unavailable"] = stats.get("unavailable", 0) + 1
                save_stats()
                return self.answer(503, b"try later", [("Retry-After", "1")])
        if mode == "reject":
            pattern = c.get("pattern", "")
            bad = [e for e in entries if pattern in json.dumps(e, ensure_ascii=False)]
            if bad:
                stats["rejected_batches"] = stats.get("rejected_batches", 0) + 1
                save_stats()
                return self.answer(400, ("refused " + str(len(bad)) + " entries").encode())
        ids.add(msg_id)
        stats["ids"] = len(ids)
        with open(store_path, "a", encoding="utf-8") as f:
            for entry in entries:
                k = entry_key(entry)
                if k in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(k)
                f.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
                stats["accepted"] += 1
            f.flush()
            os.fsync(f.fileno())
        if mode == "apply_then_drop":
            stats["dropped_answers"] = stats.get("dropped_answers", 0) + 1
            save_stats()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        save_stats()
        self.answer(200, b"ok")


save_stats()
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
if len(sys.argv) > 7:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[6], sys.argv[7])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
