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
  {"mode": "reject_hang", "pattern": "x", "seconds": 300}
                                        400 if an entry of the batch holds x;
                                        once a batch of such entries only was
                                        refused (the sender isolated them),
                                        any other batch hangs: no answer while
                                        CONTROL still says reject_hang (at most
                                        seconds), then 503, nothing stored
  {"mode": "unavailable_if", "pattern": "x"}
                                        503 (Retry-After: 1) if an entry of the
                                        batch holds x, else as "ok"
  {"mode": "echo"}                      503 whose body repeats the request's path
                                        and Authorization header (a careless
                                        receiver's error page)
  any mode, "delay": 0.05               wait that many seconds first
Requests are served in threads (several at once), one at a time past the
wait ("slow", "delay").
STATS (JSON, rewritten after every request) counts requests, bad
signatures, entries accepted and duplicates dropped, requests hung, the most
requests served at once (max_concurrent), and the largest body (JSON, after gzip is undone). REQUESTS (requests.jsonl next to
STATS) gets a line per signed request, before the answer: its JSON body's
bytes ("bytes"), the bytes of the Schema entries in it as sent
("schema_bytes"), its entries and Schema entries, its longest other entry as
sent ("max_entry"), and the status answered (0: none).
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
requests_path = os.path.join(os.path.dirname(os.path.abspath(stats_path)), "requests.jsonl")
stats = {"requests": 0, "bad_signatures": 0, "accepted": 0, "duplicates": 0, "ids": 0,
         "gzip": 0, "authorization": None, "hung": 0, "max_body": 0}
decoder = json.JSONDecoder()
seen = set()
ids = set()
lock = threading.Lock()  # one request at a time in the store and the stats
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


def raw_sizes(text):
    """The bytes of each entry of {"data":[...]} as sent (not as re-encoded)."""
    i = text.index("[", text.index('"data"')) + 1
    sizes = []
    while True:
        while text[i] in " \t\r\n":
            i += 1
        if text[i] == "]":
            return sizes
        _, end = decoder.raw_decode(text, i)
        sizes.append(len(text[i:end].encode("utf-8")))
        i = end
        while text[i] in " \t\r\n":
            i += 1
        if text[i] == ",":
            i += 1


def log_request(body, entries, status):
    """A line of REQUESTS: what this request carried."""
    schemas = set(i for i, e in enumerate(entries) if isinstance(e, dict) and "schema" in e)
    sizes = raw_sizes(body.decode("utf-8"))
    schema_bytes = sum(sizes[i] for i in schemas)
    max_entry = max([n for i, n in enumerate(sizes) if i not in schemas] or [0])
    with open(requests_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"bytes": len(body), "schema_bytes": schema_bytes,
                            "entries": len(entries), "schemas": len(schemas),
                            "max_entry": max_entry, "status": status}) + "\n")


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
        self.log_now(status)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_now(self, status):
        """The request's line in REQUESTS, before it is answered (or dropped)."""
        pending, self.pending_log = getattr(self, "pending_log", None), None
        if pending is not None:
            log_request(pending[0], pending[1], status)

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
        self.pending_log = None
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
        stats["max_body"] = max(stats["max_body"], len(body))
        try:
            entries = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            save_stats()
            return self.answer(400, b"not {\"data\": [...]}")
        c = control()
        mode = c.get("mode", "ok")
        self.pending_log = (body, entries)
        self.handle_entries(c, mode, msg_id, body, entries)

    def handle_entries(self, c, mode, msg_id, body, entries):
        """Answer the request (REQUESTS gets its line first); returns the status."""
        if mode in ("503", "429"):
            save_stats()
            self.answer(int(mode), b"try later", [("Retry-After", c.get("retry_after", "1"))])
            return int(mode)
        if mode == "reset":
            stats["resets"] = stats.get("resets", 0) + 1
            save_stats()
            self.log_now(0)
            self.close_connection = True
            self.connection.shutdown(2)
            return 0
        if mode in ("500", "400", "401"):
            save_stats()
            self.answer(int(mode), ("refused: mode " + mode).encode())
            return int(mode)
        if mode == "max_bytes" and len(body) > int(c.get("bytes", 2000)):
            stats["too_large"] = stats.get("too_large", 0) + 1
            save_stats()
            self.answer(413, b"too large")
            return 413
        if mode == "echo":
            save_stats()
            echoed = "you sent " + self.path + " with Authorization: " + str(
                self.headers.get("Authorization"))
            self.answer(503, echoed.encode(), [("Retry-After", "1")])
            return 503
        if mode == "unavailable_if":
            pattern = c.get("pattern", "")
            if any(pattern in json.dumps(e, ensure_ascii=False) for e in entries):
                stats["unavailable"] = stats.get("unavailable", 0) + 1
                save_stats()
                self.answer(503, b"try later", [("Retry-After", "1")])
                return 503
        if mode in ("reject", "reject_hang"):
            pattern = c.get("pattern", "")
            bad = [e for e in entries if pattern in json.dumps(e, ensure_ascii=False)]
            if bad:
                stats["rejected_batches"] = stats.get("rejected_batches", 0) + 1
                if len(bad) == len(entries):
                    stats["isolated"] = stats.get("isolated", 0) + 1
                save_stats()
                self.answer(400, ("refused " + str(len(bad)) + " entries").encode())
                return 400
        if mode == "reject_hang" and stats.get("isolated", 0) > 0:
            stats["hung"] += 1
            save_stats()
            deadline = time.time() + float(c.get("seconds", 300))
            while time.time() < deadline and control().get("mode") == "reject_hang":
                time.sleep(0.1)
            self.answer(503, b"hung")
            return 503
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
            self.log_now(0)
            self.close_connection = True
            self.connection.shutdown(2)
            return 0
        save_stats()
        self.answer(200, b"ok")
        return 200


def orphan_watch(parent):
    """Exit when the test that started us is gone (it may die before stopping us,
    and we would keep what it inherited: ports, file locks)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


threading.Thread(target=orphan_watch, args=(os.getppid(),), daemon=True).start()
save_stats()


class Server(http.server.ThreadingHTTPServer):
    # Room for every connection a sink opens at once (pgsink.max_in_flight
    # of them): past the default of 5, the kernel drops a SYN and the
    # client tries again a second later.
    request_queue_size = 64


server = Server(("127.0.0.1", int(port)), Handler)
if len(sys.argv) > 7:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[6], sys.argv[7])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
