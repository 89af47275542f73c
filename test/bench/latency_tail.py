#!/usr/bin/env python3
"""latency_tail.py FILE SECONDS: follow a pgsink JSON-lines file and report
commit-to-file latency (arrival time minus the entry's commit timestamp),
p50/p99/max over the Modification entries that arrive within SECONDS."""
import datetime
import os
import sys
import time

path, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.time() + seconds
latencies = []
with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    pending = b""
    while time.time() < deadline:
        chunk = f.read()
        if not chunk:
            time.sleep(0.0005)
            continue
        arrived = time.time()
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if b'"op":' not in line:
                continue
            i = line.index(b'"timestamp":"') + 13
            ts = datetime.datetime.fromisoformat(line[i:i + 32].decode())
            latencies.append((arrived - ts.timestamp()) * 1000.0)
if not latencies:
    print("latency: no entries arrived")
    sys.exit(1)
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print(f"latency over {len(latencies)} rows: p50 {pick(0.50):.1f} ms, p99 {pick(0.99):.1f} ms, "
      f"max {latencies[-1]:.1f} ms (target p99 < 50 ms)")
