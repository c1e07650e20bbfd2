#!/usr/bin/env bash
# Measures intake's peak memory (VmHWM) while it imports a 10,000-row file, then a 100,000-row
# file, each through `cnmasctl submit` (the real streamed gRPC upload), to show that memory
# stays flat with the file's size.
#
# Starts its own intake and scheduler (the scheduler creates the campaigns intake learns of)
# with a fresh namespace and fresh databases on the local PostgreSQL and NATS, and stops them
# and drops the databases afterwards. Its streams use NATS memory storage: they go when NATS
# restarts.
#
# Usage: services/intake/scripts/import-memory.sh [--release] [ROWS...]   (default: 10000 100000)
# Environment: CARGO_TARGET_DIR, CNMAS_PG_URL (default postgres://postgres@127.0.0.1:5432),
# CNMAS_NATS_URL (default nats://127.0.0.1:4222), MEM_PORT_BASE (default 50160: four ports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
PROFILE=debug
CARGO_FLAGS=()
if [ "${1:-}" = --release ]; then
    PROFILE=release
    CARGO_FLAGS=(--release)
    shift
fi
ROWS=("$@")
[ "${#ROWS[@]}" -gt 0 ] || ROWS=(10000 100000)

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/$PROFILE"
PG="${CNMAS_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BASE="${MEM_PORT_BASE:-50160}"
NS="mem$$"
WORK="$(mktemp -d)"

log() { printf '[import-memory] %s\n' "$*" >&2; }

log "building cnmas-intake, cnmas-scheduler and cnmasctl ($PROFILE)"
cargo build "${CARGO_FLAGS[@]}" -p cnmas-intake -p cnmas-scheduler -p cnmasctl >&2

secret() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }
export CNMAS_NAMESPACE="$NS"
export CNMAS_NATS_URL="${CNMAS_NATS_URL:-nats://127.0.0.1:4222}"
export CNMAS_NATS_MEMORY_STORAGE=true
export CNMAS_JWT_SECRET="$(secret)"
export CNMAS_PERSON_KEY_SECRET="$(secret)"
export CNMAS_VAULT_KEYS="k1:$(secret)"
export CNMAS_VAULT_ACTIVE_KEY=k1
export CNMAS_LOG=warn
export CNMAS_INTAKE_URL="http://127.0.0.1:$BASE"
export CNMAS_SCHEDULER_URL="http://127.0.0.1:$((BASE + 2))"

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in intake scheduler; do
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS cnmas_${NS}_$db" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

start() { # service grpc-port http-port
    CNMAS_DATABASE_URL="$PG/cnmas_${NS}_$1" CNMAS_GRPC_ADDR="127.0.0.1:$2" \
        CNMAS_HTTP_ADDR="127.0.0.1:$3" "$BIN/cnmas-$1" >"$WORK/$1.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 120); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$3/readyz" || true)" = 200 ]; then
            return 0
        fi
        kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/$1.log" >&2; exit 1; }
        sleep 0.5
    done
    log "$1 did not become ready"; cat "$WORK/$1.log" >&2; exit 1
}
start scheduler $((BASE + 2)) $((BASE + 3))
start intake "$BASE" $((BASE + 1))
INTAKE_PID="${PIDS[-1]}"

CTL="$BIN/cnmasctl"
SUP="$("$CTL" token --role supervisor --subject import-memory)"
FUND="$("$CTL" token --role fund --fund 751 --subject import-memory)"

# A flu-vaccination file of $1 distinct valid people (NIR keys computed), from person $2 on.
generate() {
    awk -v n="$1" -v off="$2" 'BEGIN {
        print "nir;last_name;first_name;birth_date;phone;postcode;flu_vaccinated"
        for (i = 0; i < n; i++) {
            k = i + off
            yy = 50 + k % 40; mm = 1 + k % 12
            body = sprintf("1%02d%02d75%03d%03d", yy, mm, 1 + int(k / 999) % 989, 1 + k % 999)
            key = 97 - (body + 0) % 97
            printf "%s%02d;Martin;Hélène;19%02d-%02d-15;06 12 %02d %02d %02d;75011;non\n", \
                body, key, yy, mm, int(k / 10000) % 100, int(k / 100) % 100, k % 100
        }
    }'
}

kib() { awk -v f="$1" '$1 == f":" { print $2 }' "/proc/$INTAKE_PID/status"; }

printf '%-8s %-12s %-14s %-18s %-10s\n' rows "file (MiB)" "RSS before" "peak RSS (VmHWM)" seconds
offset=0
for n in "${ROWS[@]}"; do
    file="$WORK/contacts-$n.csv"
    generate "$n" "$offset" >"$file"
    offset=$((offset + n))
    cid="$("$CTL" --token "$SUP" campaign create --fund 751 --name "memory $n" \
        --theme flu_vaccination --starts-on "$(date +%F)" --ends-on "$(date -d '+30 days' +%F)" \
        --presented-number +33947500000 --all-hours-reason "import memory measurement" |
        sed -n 's/.*"campaign_id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | tail -n 1)"
    [ -n "$cid" ] || { log "no campaign created"; exit 1; }
    "$CTL" --token "$SUP" campaign activate --campaign "$cid" >/dev/null
    before="$(kib VmRSS)"
    # Resets the peak so VmHWM covers this import only.
    echo 5 >"/proc/$INTAKE_PID/clear_refs"
    t0="$(date +%s)"
    "$CTL" --token "$FUND" submit --campaign "$cid" --file "$file" >"$WORK/summary-$n.json"
    t1="$(date +%s)"
    grep -q '"rows_accepted":'"$n"',' "$WORK/summary-$n.json" ||
        { log "not every row accepted: $(cat "$WORK/summary-$n.json")"; exit 1; }
    printf '%-8s %-12s %-14s %-18s %-10s\n' "$n" \
        "$(awk -v b="$(stat -c %s "$file")" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$((before / 1024)) MiB" "$(($(kib VmHWM) / 1024)) MiB" "$((t1 - t0))"
done
