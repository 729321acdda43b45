#!/usr/bin/env python3
"""Sends a short burst of sample traffic through strangler and prints, per
route, which backend served what (from each response's X-Served-By header)."""
import argparse
import collections
import http.client
import json
import sys

ROUTES = [
    # (route name, method, path, header factory)
    ("users", "GET", lambda i: f"/api/users/{i % 20 + 1}", lambda i: {}),
    ("orders", "GET", lambda i: f"/api/orders/{i % 7 + 1}", lambda i: {"X-User-Id": f"user-{i}"}),
    ("search", "GET", lambda i: f"/api/search?q={['red', 'Blue', 'shoe'][i % 3]}", lambda i: {}),
    ("(default)", "GET", lambda i: "/health", lambda i: {}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", default="127.0.0.1:8080")
    ap.add_argument("--per-route", type=int, default=40)
    args = ap.parse_args()
    host, port = args.proxy.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    served = collections.OrderedDict()
    statuses = collections.Counter()
    for name, method, path, headers in ROUTES:
        counts = served.setdefault(name, collections.Counter())
        for i in range(args.per_route):
            conn.request(method, path(i), headers=headers(i))
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
            counts[resp.getheader("X-Served-By", "?")] += 1
    print(f"{'route':<11} {'requests':>8} {'legacy-go':>10} {'modern-rust':>12}")
    for name, counts in served.items():
        total = sum(counts.values())
        print(f"{name:<11} {total:>8} {counts['legacy-go']:>10} {counts['modern-rust']:>12}")
    print("statuses:", json.dumps({str(k): v for k, v in sorted(statuses.items())}))
    return 0 if set(statuses) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
