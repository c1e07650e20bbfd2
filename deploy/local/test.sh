#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL and NATS JetStream (started, or installed,
# when absent). Uses cargo-nextest when available, `cargo test` otherwise. Extra arguments are
# passed to the test runner (e.g. a test name filter). Without arguments, the benchmark then runs
# once at a tiny size in the debug build (it must run end to end and lose or duplicate nothing;
# its figures mean nothing there). Exit code = the test runner's, else the benchmark's.
#
# Usage: deploy/local/test.sh [runner arguments...]
#   CNMAS_TEST_RUNNER=cargo   force `cargo test` even when nextest is installed
#
# Exported to the tests when not already set (tests choose their own database names and a
# random NATS namespace, so parallel runs do not collide):
#   CNMAS_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:5432  (the server; tests add their database names)
#   CNMAS_TEST_NATS_URL      nats://127.0.0.1:4222
set -euo pipefail

# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CNMAS_REPO_ROOT"

ensure_postgres
ensure_nats
# The web console's browser tests drive headless Chromium through chromedriver (Debian packages).
ensure_chromium

export CNMAS_TEST_DATABASE_URL="${CNMAS_TEST_DATABASE_URL:-${CNMAS_PG_URL}}"
export CNMAS_TEST_NATS_URL="${CNMAS_TEST_NATS_URL:-nats://${CNMAS_NATS_HOST}:${CNMAS_NATS_PORT}}"

have cargo || die "cargo not found: install Rust (https://rustup.rs)"

if [ "${CNMAS_TEST_RUNNER:-}" != cargo ] && cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests; the suite has none that matter (run `cargo test --doc` if needed).
    cmd=(cargo nextest run --workspace --all-targets "$@")
else
    cmd=(cargo test --workspace --all-targets "$@")
fi

log "CNMAS_TEST_DATABASE_URL=$CNMAS_TEST_DATABASE_URL CNMAS_TEST_NATS_URL=$CNMAS_TEST_NATS_URL"
log "running: ${cmd[*]}"
"${cmd[@]}"

if [ $# -eq 0 ]; then
    # The benchmark starts the service binaries that sit next to it, so build them all.
    bench=(cargo run --quiet -p cnmas-bench -- --contacts 2000 --outcomes 500 --agents 20
        --talk-ms 200 --day-seconds 5 --pg "$CNMAS_TEST_DATABASE_URL" --nats "$CNMAS_TEST_NATS_URL")
    log "running: cargo build --bins && ${bench[*]}"
    cargo build --bins
    "${bench[@]}"
fi
