"""Load evidence: many /analyze calls from concurrent clients against a real server on loopback.

    python -m bench.load_test [--calls 200] [--clients 16] [--out reports/load_test.json]

Passes (exit 0) when every call succeeds, every answer names the same class as a single call on that
scan, and the server's resident memory after the run is within 10 % of its memory after warm-up
(one single call per example, then one round of `--clients` concurrent calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.server import AppServer, call_concurrently, example_files

REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_TOLERANCE = 0.10


def run(calls: int, clients: int) -> dict:
    files = example_files()
    with AppServer() as server:
        expected = {}
        for path in files:  # single calls: the reference answers
            expected[path] = server.client().predict(server.file(path), api_name="/analyze")[4]["predicted_class"]
        # Warm-up at the test's own concurrency, so thread pools and allocator arenas are in place.
        call_concurrently(server, [files[i % len(files)] for i in range(clients)], clients)
        rss_warm = server.rss_mb()
        started = time.perf_counter()
        batch = [files[i % len(files)] for i in range(calls)]
        outcome = call_concurrently(server, batch, clients)
        wrong = [str(p.name) for p, r in zip(batch, outcome["results"])
                 if r is not None and r[4]["predicted_class"] != expected[p]]
        rss_after = server.rss_mb()
        report = {
            "calls": calls, "clients": clients, "seconds": round(time.perf_counter() - started, 1),
            "errors": outcome["errors"], "error_messages": outcome["error_messages"], "wrong_answers": len(wrong),
            "rps": round(outcome["rps"], 2), "p50_ms": outcome["p50_ms"], "p95_ms": outcome["p95_ms"],
            "rss_after_warmup_mb": round(rss_warm), "rss_after_run_mb": round(rss_after),
            "rss_growth": round(rss_after / rss_warm - 1, 3),
        }
    report["passed"] = report["errors"] == 0 and not wrong and abs(report["rss_growth"]) <= MEMORY_TOLERANCE
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "load_test.json")
    args = parser.parse_args(argv)
    report = run(args.calls, args.clients)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
