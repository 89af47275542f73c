#!/usr/bin/env python3
"""A webhook receiver for benchmarks: reads each request and answers 200.

    ack_receiver.py PORT COUNT_FILE

It counts the entries it received (commas at the top level of "data" are
not parsed: it counts the "lsn" keys, one per entry) and writes the running
total to COUNT_FILE after every request.
"""
import http.server
import os
import sys

port, count_path = int(sys.argv[1]), sys.argv[2]
total = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        global total
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        total += body.count(b'"lsn":')
        with open(count_path + ".tmp", "w") as f:
            f.write(str(total))
        os.replace(count_path + ".tmp", count_path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
