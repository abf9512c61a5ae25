#!/usr/bin/env bash
# Fleet-scale benchmark of the central PostgreSQL: every provisioned
# Grafana panel query and alert rule query against a database holding the
# history of a large fleet (issue 17, item 2).
#
#   ./scripts/bench/fleet.sh [--sites 10000] [--days 7] [--ranges 6h,24h,7d]
#                            [--site SITE] [--markdown] [--keep] [--out DIR]
#                            [--url URL] [--only REGEX]
#
# --url: no new server, no generation: runs steps 4-6 against a database a
# --keep run left (after `sitewatch-bridge migrate` brought it to a newer
# schema, say); $FLEET_QUERIES_GRAFANA_DIR reads the queries of another
# grafana/ directory (a checkout of an older revision). --only: the queries
# whose "dashboard / title" matches REGEX (Python syntax).
#
# Method:
#  1. A throwaway PostgreSQL (the Debian server's binaries, initdb in a temp
#     dir, a free port, shared_buffers 2GB; fsync and autovacuum off while
#     loading only). The schema is the bridge's own: `sitewatch-bridge
#     migrate`.
#  2. History generated inside PostgreSQL, hour by hour in time order
#     (sites interleaved, as the bridge writes them), with
#     INSERT ... SELECT ... FROM generate_series (scripts/bench/fleet-generate.sql:
#     rates, value distributions and what goes wrong where). The server
#     runs at nice 10 while loading. Then the latest-state tables (sites,
#     cameras, disks, boots), VACUUM ANALYZE and a CHECKPOINT.
#  3. The sites' last_seen is moved to now (the history ends when loading
#     started), so the fleet view shows online sites as online.
#  4. `e2e/tests/fleet_queries.rs` (ignored test) expands every SQL query of
#     every dashboard and alert rule with Grafana's macros
#     (sitewatch_e2e::grafana::macros) for each range, `$site` = --site
#     (default: the first online site whose "/" is filling up).
#  5. scripts/bench/fleet-queries.py runs each through psql at nice 0: wall
#     time of the first run and the median of 3 more, rows, and
#     EXPLAIN (ANALYZE, BUFFERS); queries over 1 s are flagged, and the
#     plans of the slowest are written to DIR/plans.txt.
#  6. Size of each table (heap + indexes + TOAST, partitions summed) and
#     per site-day.
#
# The server and its data dir are removed at exit (--keep leaves them and
# prints how to connect). Results (table, plans, sizes) stay in --out
# (default /tmp/sitewatch-fleet-<date>). $FLEET_TIMEOUT_S: statement
# timeout per query (default 300 s; a query over it is reported as an error).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

SITES=10000 DAYS=7 RANGES=6h,24h,7d SITE="" MARKDOWN=0 KEEP=0 OUT="" URL="" ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sites) SITES="$2"; shift 2 ;;
        --days) DAYS="$2"; shift 2 ;;
        --ranges) RANGES="$2"; shift 2 ;;
        --site) SITE="$2"; shift 2 ;;
        --markdown) MARKDOWN=1; shift ;;
        --keep) KEEP=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --url) URL="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
OUT=${OUT:-/tmp/sitewatch-fleet-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUT"
command -v python3 >/dev/null || die "python3 is needed"
PGBIN=$(pg_bindir)
[ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found (set SITEWATCH_PG_BINDIR)"

log "Building sitewatch-bridge (for migrate) and the query expander (e2e/tests/fleet_queries.rs)"
cargo build --locked --bin sitewatch-bridge 2>&1 | tail -1
cargo test --locked -p sitewatch-e2e --test fleet_queries --no-run 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BRIDGE="$TARGET_DIR/debug/sitewatch-bridge"

WORK=$(mktemp -d /tmp/sitewatch-fleet.XXXXXX)
PG_PORT=""
cleanup() {
    set +e
    if [ "$KEEP" = 1 ]; then
        log "Kept: $WORK (psql -h 127.0.0.1 -p $PG_PORT -U postgres fleet); stop with: $PGBIN/pg_ctl -D $WORK/pg stop; rm -rf $WORK"
        return
    fi
    stop_throwaway_postgres "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "$URL" ]; then
    PSQL=("$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$URL")
    PSQLF=("${PSQL[@]}")
    read -r SITES DAYS T_START T_END <<<"$("${PSQL[@]}" -F ' ' -c "select sites, extract(epoch from t_end - t_start)::int / 86400,
        to_char(t_start, 'YYYY-MM-DD\"T\"HH24:MI:SS'), to_char(t_end, 'YYYY-MM-DD\"T\"HH24:MI:SS') from bench.params")"
    GEN_SECS="(earlier run)" VAC_SECS="(earlier run)"
    POSTMASTER=""
else
PG_PORT=$(free_port)
# Query-time settings are PostgreSQL 15's defaults (work_mem 4MB, jit on)
# except shared_buffers; durability is off for the load only (it does not
# change how reads run).
start_throwaway_postgres "$WORK" "$PG_PORT" "-c shared_buffers=2GB -c maintenance_work_mem=512MB \
-c max_wal_size=4GB -c checkpoint_timeout=30min -c fsync=off -c synchronous_commit=off \
-c full_page_writes=off -c wal_level=minimal -c max_wal_senders=0 -c autovacuum=off"
POSTMASTER=$(head -1 "$WORK/pg/postmaster.pid")
renice -n 10 -p "$POSTMASTER" >/dev/null
PSQL=("$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -c "create database fleet"
URL="postgres://postgres@127.0.0.1:$PG_PORT/fleet"
PSQLF=("${PSQL[@]}" -d fleet)
cat > "$WORK/bridge.toml" <<CONF
[mqtt]
url = "mqtt://127.0.0.1:1"
client_id = "sitewatch-bridge-fleet"

[postgres]
url = "$URL"
CONF
"$BRIDGE" migrate --config "$WORK/bridge.toml" >"$WORK/migrate.log" 2>&1 \
    || { cat "$WORK/migrate.log" >&2; die "sitewatch-bridge migrate failed"; }
log "Schema: $("${PSQL[@]}" -d fleet -c "select max(version) from schema_migrations")"

T_END=$("${PSQL[@]}" -d fleet -c "select date_trunc('minute', now())")
T_START=$("${PSQL[@]}" -d fleet -c "select date_trunc('minute', now()) - interval '$DAYS days'")
GEN=("${PSQL[@]}" -d fleet -f scripts/bench/fleet-generate.sql)
HOURS=$(( DAYS * 24 ))
log "Generating $SITES sites x $DAYS days ($HOURS hours, $T_START .. $T_END)"
G0=$(date +%s)
"${GEN[@]}" -v step=setup -v sites="$SITES" -v t_start="$T_START" -v t_end="$T_END"
for h in $(seq 0 $(( HOURS - 1 ))); do
    "${GEN[@]}" -v step=hour -v h="$h"
    if [ $(( (h + 1) % 6 )) = 0 ]; then
        log "  hour $(( h + 1 ))/$HOURS ($(( $(date +%s) - G0 )) s, $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free)"
    fi
done
"${GEN[@]}" -v step=finish
G1=$(date +%s)
log "VACUUM ANALYZE and CHECKPOINT"
"${PSQL[@]}" -d fleet -c "vacuum analyze" -c "checkpoint"
G2=$(date +%s)
GEN_SECS=$(( G1 - G0 )) VAC_SECS=$(( G2 - G1 ))

renice -n 0 -p "$POSTMASTER" >/dev/null
fi

[ -n "$SITE" ] || SITE=$("${PSQLF[@]}" -c "select site from bench.site where root_filling and not offline and end_at > (select t_end from bench.params) order by n limit 1")
# The history ends at T_END; the fleet's "now" is when the queries run.
# last_seen goes 30 min ahead so that the fleet view still counts the
# sites online (silent for less than 3 heartbeats) when the last query runs.
"${PSQLF[@]}" -c "update sites s set last_seen = now() + interval '30 minutes' - b.jitter * interval '1 second'
    from bench.site b where b.site = s.site and s.state = 'online' and b.end_at > (select t_end from bench.params)" \
    -c "update sites s set last_seen = now() - interval '10 minutes' from bench.site b
    where b.site = s.site and s.state = 'online' and b.end_at <= (select t_end from bench.params)" \
    -c "update bridge_sessions set last_seen = now()" -c "vacuum analyze sites"
MIGRATIONS=$("${PSQLF[@]}" -c "select string_agg(lpad(version::text, 4, '0') || '_' || name, ' ' order by version) from schema_migrations")

log "Expanding the provisioned queries (site $SITE, ranges $RANGES)"
FLEET_QUERIES_OUT="$WORK/queries.jsonl" FLEET_QUERIES_SITE="$SITE" FLEET_QUERIES_RANGES="$RANGES" \
    cargo test --locked -q -p sitewatch-e2e --test fleet_queries -- --ignored --exact \
    expand_provisioned_sql_for_the_fleet_bench >/dev/null
cp "$WORK/queries.jsonl" "$OUT/queries.jsonl"

log "Running $(wc -l < "$WORK/queries.jsonl") queries"
MD=(); [ "$MARKDOWN" = 1 ] && MD=(--markdown)
[ -n "$ONLY" ] && MD+=(--only "$ONLY")
python3 scripts/bench/fleet-queries.py --psql "$PGBIN/psql" --url "$URL" --queries "$WORK/queries.jsonl" \
    --timeout-s "${FLEET_TIMEOUT_S:-300}" --plans "$OUT/plans.txt" --slowest 5 "${MD[@]}" >"$OUT/queries.md" || true

"${PSQLF[@]}" -F ' | ' -c "
with t as (
    select c.relname,
           (select sum(pg_table_size(p.relid)) from pg_partition_tree(c.oid) p) as heap,
           (select sum(pg_indexes_size(p.relid)) from pg_partition_tree(c.oid) p) as idx,
           (select sum(c2.reltuples) from pg_partition_tree(c.oid) p join pg_class c2 on c2.oid = p.relid
             where c2.relkind = 'r') as rows
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
), s as (select $SITES * $DAYS::numeric as site_days)
select '| ' || relname, to_char(rows, 'FM999,999,999,990'), pg_size_pretty(heap), pg_size_pretty(idx),
       pg_size_pretty(heap + idx), pg_size_pretty(round((heap + idx) / s.site_days)) || ' |'
from t, s where heap + idx > 65536 order by heap + idx desc" >"$WORK/sizes.txt"
TOTAL=$("${PSQLF[@]}" -c "select pg_size_pretty(pg_database_size(current_database())) || ' | ' || pg_size_pretty(round(pg_database_size(current_database()) / ($SITES * $DAYS::numeric)))")
{
    echo "| table | rows | heap + TOAST | indexes | total | per site-day |"
    echo "|---|---:|---:|---:|---:|---:|"
    cat "$WORK/sizes.txt"
    echo "| database | | | | $TOTAL |"
} >"$OUT/sizes.md"

{
    echo "Fleet: $SITES sites x $DAYS days ($T_START .. $T_END), schema $MIGRATIONS"
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(date -u +%Y-%m-%d)"
    [ -n "${FLEET_QUERIES_GRAFANA_DIR:-}" ] && echo "Queries from $FLEET_QUERIES_GRAFANA_DIR"
    echo "Generation: ${GEN_SECS} s at nice 10, VACUUM ANALYZE + CHECKPOINT ${VAC_SECS} s; dashboard variables: site=$SITE, watermark=90, skew_secs=300"
    echo
    cat "$OUT/sizes.md"
    echo
    cat "$OUT/queries.md"
} | tee "$OUT/summary.md"
log "Results in $OUT (summary.md, plans.txt of the 5 slowest, queries.jsonl)"
