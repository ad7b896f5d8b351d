#!/usr/bin/env python3
"""Times pages of a running web server for benches/serve.sh.

    serve_bench.py latency BASE_URL REPEATS PATH...   median and p90 per path: the
        server's own time (Server-Timing, when it sends one) and the time to the last
        byte seen by this client, over one kept-alive connection
"""
import http.client
import statistics
import sys
import time
import urllib.parse


def connect(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def fetch(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {body[:300]!r}")
    timing = r.getheader("server-timing")
    server = None
    if timing and "dur=" in timing:
        server = float(timing.split("dur=")[1].split(";")[0].split(",")[0])
    return server, len(body)


def latency(base, repeats, paths):
    conn = connect(base)
    for path in paths:
        fetch(conn, path)  # warm the pages this path reads
        server, wall = [], []
        size = 0
        for _ in range(repeats):
            start = time.perf_counter()
            s, size = fetch(conn, path)
            wall.append((time.perf_counter() - start) * 1000)
            if s is not None:
                server.append(s)

        def show(xs):
            if not xs:
                return "-"
            xs = sorted(xs)
            return f"{statistics.median(xs):.1f} ms (p90 {xs[int(len(xs) * 0.9) - 1]:.1f})"

        print(f"{path}\tserver {show(server)}\tclient {show(wall)}\t{size} bytes")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "latency":
        latency(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        raise SystemExit(__doc__)
