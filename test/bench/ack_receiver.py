#!/usr/bin/env python3
"""A webhook receiver for benchmarks: reads each request and answers 200.

    ack_receiver.py PORT COUNT_FILE [DELAY_SECONDS [STORE]]

It counts the entries it received (it does not parse the JSON: it counts the
"lsn" keys, one per entry) and writes the running total to COUNT_FILE after
every request. With DELAY_SECONDS it answers each request that much later (a
slow receiver; requests are served in threads, so several can wait at once).
With STORE it appends each entry received, one JSON line each, as it arrives
(latency_tail.py follows it: commit-to-receiver latency).
"""
import http.server
import json
import os
import sys
import threading
import time

port, count_path = int(sys.argv[1]), sys.argv[2]
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
store = open(sys.argv[4], "ab", buffering=0) if len(sys.argv) > 4 else None
total = 0
lock = threading.Lock()
with open(count_path, "w") as f:
    f.write("0")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        global total
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if store is not None:
            lines = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n"
                             for e in json.loads(body)["data"])
        if delay > 0:
            time.sleep(delay)
        with lock:
            if store is not None:
                store.write(lines)
            total += body.count(b'"lsn":')
            with open(count_path + ".tmp", "w") as f:
                f.write(str(total))
            os.replace(count_path + ".tmp", count_path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Server(http.server.ThreadingHTTPServer):
    # Room for 16 connections opened at once (max_in_flight 16): past the
    # default backlog of 5 the kernel dropped a SYN, and the client's retry
    # a second later was timed as the sink's (a run of 0.9 s took 1.9 s).
    request_queue_size = 64

    def handle_error(self, request, client_address):
        # A sender that went away mid-request (its worker restarted when a
        # setting changed between phases) is not the benchmark's business.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


Server(("127.0.0.1", port), Handler).serve_forever()
