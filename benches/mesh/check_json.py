"""Checks the JSON of `cargo bench --bench mesh -- --json PATH` (scripts/test.sh runs it after the
quick run): a list of scenario objects with the documented fields and types, each of which moved
something (answered requests, or TCP bytes)."""

import json
import sys

NUMBER_OR_NULL = ("rate_rps", "achieved_rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "added_p99_ms",
                  "cpu_s_per_100k", "rss_peak_kib", "throughput_mib_s")
CHOICES = {"proxy": {"direct", "pilotfish", "haproxy", "nginx"}, "topology": {"direct", "single", "pair"},
           "protocol": {"http1", "http2", "grpc", "tcp"}}


def check(row):
    name = row.get("name")
    assert isinstance(name, str) and name, f"a row without a name: {row}"
    for field, choices in CHOICES.items():
        assert row.get(field) in choices, f"{name}: {field} = {row.get(field)!r}"
    assert isinstance(row.get("tls"), bool), f"{name}: tls = {row.get('tls')!r}"
    for field in NUMBER_OR_NULL:
        assert field in row, f"{name}: no {field}"
        value = row[field]
        assert value is None or isinstance(value, (int, float)), f"{name}: {field} = {value!r}"
    if row["protocol"] == "tcp":
        assert (row["throughput_mib_s"] or 0) > 0, f"{name}: moved no bytes"
    else:
        assert (row["achieved_rps"] or 0) > 0 and row["p99_ms"] is not None, f"{name}: made no requests"
        assert row["errors"] == 0, f"{name}: {row['errors']} failed requests"
    proxies = {"direct": 0, "single": 1, "pair": 2}[row["topology"]]
    for field in ("proxies_cpu_s", "proxies_rss_peak_kib"):
        assert len(row.get(field, ())) == proxies, f"{name}: {field} = {row.get(field)!r}"
    if proxies:
        assert (row["rss_peak_kib"] or 0) > 0, f"{name}: no peak RSS"
        assert row["rss_peak_kib"] == max(row["proxies_rss_peak_kib"]), f"{name}: rss_peak_kib is not the largest"


def main(path):
    with open(path) as f:
        rows = json.load(f)
    assert isinstance(rows, list) and rows, "the JSON is not a non-empty list"
    for row in rows:
        check(row)
    assert any(r["rate_rps"] is not None for r in rows), "no open-loop scenario"
    print(f"mesh bench JSON: {len(rows)} scenarios checked")


if __name__ == "__main__":
    main(sys.argv[1])
