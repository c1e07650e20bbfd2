#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL and NATS JetStream (started, or installed,
# when absent). Uses cargo-nextest when available, `cargo test` otherwise. Extra arguments are
# passed to the test runner (e.g. a test name filter). Exit code = the test runner's.
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
exec "${cmd[@]}"
