#!/usr/bin/env python3
"""Runs the provisioned Grafana SQL against the fleet bench database.

Used by scripts/bench/fleet.sh. Reads the queries that
`e2e/tests/fleet_queries.rs` expanded (one JSON object per line), and for
each: the wall time of running it through one psql session (the first run,
then the median of --repeat more), and EXPLAIN (ANALYZE, BUFFERS, FORMAT
JSON) for the rows and buffers. Prints a table (--markdown: GitHub
markdown) and writes the text plans of the slowest queries to --plans.

    fleet-queries.py --psql PSQL --url URL --queries FILE [--repeat 3]
                     [--slow-ms 1000] [--plans FILE] [--slowest 3] [--markdown]
                    [--timeout-s 300] [--only REGEX]
"""

import argparse
import json
import re
import statistics
import subprocess
import sys


def psql(args, url, sql):
    out = subprocess.run(
        [args.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=sql,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout


def wall_ms(args, url, sql, n):
    """Runs sql n times in one session; psql's \\timing per run (ms)."""
    script = f"SET statement_timeout = '{args.timeout_s}s';\n\\timing on\n\\o /dev/null\n" + "".join(sql.rstrip().rstrip(";") + ";\n" for _ in range(n))
    out = psql(args, url, script)
    times = [float(m) for m in re.findall(r"^Time: ([0-9.]+) ms", out, re.M)]
    if len(times) != n:
        raise RuntimeError(f"expected {n} timings, got: {out[:500]}")
    return times


def explain(args, url, sql, fmt):
    opts = "ANALYZE, BUFFERS" + (", FORMAT JSON" if fmt == "json" else "")
    return psql(
        args, url, f"SET statement_timeout = '{args.timeout_s}s';\nEXPLAIN ({opts}) {sql.rstrip().rstrip(';')};"
    )


def fmt_ms(v):
    return "-" if v is None else f"{v:.1f}"


def worst(r):
    return max(r["first"], r["warm"] or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--psql", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow-ms", type=float, default=1000.0)
    ap.add_argument("--plans")
    ap.add_argument("--slowest", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout-s", type=int, default=300)
    ap.add_argument("--only", help="only the queries whose 'dashboard / title' matches this regex")
    args = ap.parse_args()

    queries = [json.loads(line) for line in open(args.queries, encoding="utf-8") if line.strip()]
    if args.only:
        queries = [q for q in queries if re.search(args.only, f"{q['dashboard']} / {q['title']}")]
    results = []
    for i, q in enumerate(queries, 1):
        name = f"{q['dashboard']} / {q['title']}"
        try:
            times = wall_ms(args, args.url, q["sql"], 1)
            # A query far over the limit is run once more only (EXPLAIN
            # ANALYZE below), not --repeat times.
            if times[0] < 5 * args.slow_ms:
                times += wall_ms(args, args.url, q["sql"], args.repeat)
            plan = json.loads(explain(args, args.url, q["sql"], "json"))[0]
        except RuntimeError as e:
            print(f"error: {name} ({q['range']}): {e}", file=sys.stderr)
            results.append(dict(q, name=name, first=None, warm=None, rows=None, error=str(e)))
            continue
        top = plan["Plan"]
        r = dict(
            q,
            name=name,
            first=times[0],
            warm=statistics.median(times[1:]) if len(times) > 1 else None,
            explain_ms=plan.get("Planning Time", 0) + plan.get("Execution Time", 0),
            rows=top.get("Actual Rows"),
            hit=top.get("Shared Hit Blocks", 0),
            read=top.get("Shared Read Blocks", 0),
        )
        results.append(r)
        print(
            f"[{i}/{len(queries)}] {name} ({q['range']}): first {r['first']:.1f} ms, "
            f"warm {fmt_ms(r['warm'])} ms, {r['rows']} rows",
            file=sys.stderr,
        )

    ok = [r for r in results if r.get("error") is None]
    slow = [r for r in ok if worst(r) > args.slow_ms]
    if args.markdown:
        print(f"| query (dashboard / panel) | range | first ms | warm ms (median of {args.repeat}; - : first over {5 * args.slow_ms:.0f} ms, not repeated) | rows | shared buffers hit / read | over {args.slow_ms:.0f} ms |")
        print("|---|---|---:|---:|---:|---:|---|")
        for r in results:
            if r.get("error") is not None:
                print(f"| {r['name']} | {r['range']} | error | | | | {r['error'][:80]} |")
                continue
            flag = "**yes**" if r in slow else ""
            print(
                f"| {r['name']} | {r['range']} | {r['first']:.1f} | {fmt_ms(r['warm'])} | {r['rows']} | "
                f"{r['hit']} / {r['read']} | {flag} |"
            )
    else:
        for r in results:
            if r.get("error") is not None:
                print(f"{r['name'][:70]:70} {r['range']:>10} ERROR {r['error'][:60]}")
                continue
            flag = "SLOW" if r in slow else ""
            print(f"{r['name'][:70]:70} {r['range']:>10} {r['first']:9.1f} {fmt_ms(r['warm']):>9} {str(r['rows']):>8} {flag}")
    print(
        f"\n{len(results)} queries, {len(results) - len(ok)} errors, {len(slow)} over {args.slow_ms:.0f} ms"
        + (f" ({args.label})" if args.label else ""),
    )
    if args.plans:
        with open(args.plans, "w", encoding="utf-8") as f:
            for r in sorted(ok, key=lambda r: -worst(r))[: args.slowest]:
                f.write(f"=== {r['name']} ({r['range']}): first {r['first']:.1f} ms, warm {fmt_ms(r['warm'])} ms\n")
                f.write(r["sql"].strip() + "\n\n")
                f.write(explain(args, args.url, r["sql"], "text") + "\n")
    return 1 if len(ok) < len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
