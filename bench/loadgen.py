"""``python -m bench.loadgen URL PAYLOAD_FILE CLIENTS REQUESTS``: a closed-loop load generator.

``CLIENTS`` threads, each with one keep-alive ``http.client`` connection, send ``REQUESTS``
POSTs in all (after a few warm-up requests each) and wait for each answer before the next.
Prints requests/s and latency percentiles as one JSON line. Runs in its own process so its own
CPU use and GIL never share a process with the server or the harness.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

_WARMUP_PER_CLIENT = 5


def _client(host, port, path, body, count, latencies, errors, start_barrier):
    connection = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}

    def post():
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    for _ in range(_WARMUP_PER_CLIENT):
        post()
    start_barrier.wait()
    for _ in range(count):
        begin = time.perf_counter()
        status = post()
        latencies.append(time.perf_counter() - begin)
        if status != 200:
            errors.append(status)
    connection.close()


def run(url, body, clients, requests):
    parsed = urllib.parse.urlsplit(url)
    latencies, errors = [], []
    barrier = threading.Barrier(clients + 1)
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    threads = [
        threading.Thread(
            target=_client,
            args=(parsed.hostname, parsed.port, parsed.path, body, n, latencies, errors, barrier),
        )
        for n in per_client
    ]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def percentile(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "p50_seconds": percentile(50),
        "p99_seconds": percentile(99),
    }


if __name__ == "__main__":
    url, payload_file, clients, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(payload_file, "rb") as f:
        body = f.read()
    print("BENCH_RESULT " + json.dumps(run(url, body, clients, requests)), flush=True)
