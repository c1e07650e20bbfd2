#!/usr/bin/env bash
# shellcheck shell=bash
# Shared functions for the local scripts (up.sh, down.sh, test.sh). Source it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# or run one function directly:  deploy/local/lib.sh ensure_postgres ensure_nats
#
# Safe under `set -euo pipefail`. Everything is logged to stderr with a `[cnmas-local]` prefix.
#
# Environment (all optional):
#   CNMAS_PG_HOST / CNMAS_PG_PORT      PostgreSQL address (default 127.0.0.1 / 5432)
#   CNMAS_PG_URL                       base URL the services use (default postgres://postgres@HOST:PORT)
#   CNMAS_PG_CONFIGURE_TRUST=1         allow ensure_postgres to add a `trust` line for 127.0.0.1 to an
#                                      existing cluster's pg_hba.conf (done automatically only when
#                                      this script installed PostgreSQL itself)
#   CNMAS_NATS_HOST / CNMAS_NATS_PORT  NATS address (default 127.0.0.1 / 4222)
#   CNMAS_NATS_STORE_DIR               JetStream store when we start nats-server
#                                      (default /var/lib/nats-server as root, .local/nats otherwise)
#   CNMAS_NATS_LOG                     its log (default /var/log/nats-server.log as root,
#                                      .local/logs/nats-server.log otherwise)

CNMAS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CNMAS_STATE_DIR="${CNMAS_STATE_DIR:-$CNMAS_REPO_ROOT/.local}"

CNMAS_PG_HOST="${CNMAS_PG_HOST:-127.0.0.1}"
CNMAS_PG_PORT="${CNMAS_PG_PORT:-5432}"
CNMAS_PG_URL="${CNMAS_PG_URL:-postgres://postgres@${CNMAS_PG_HOST}:${CNMAS_PG_PORT}}"
CNMAS_NATS_HOST="${CNMAS_NATS_HOST:-127.0.0.1}"
CNMAS_NATS_PORT="${CNMAS_NATS_PORT:-4222}"

log() { printf '[cnmas-local] %s\n' "$*" >&2; }
warn() { printf '[cnmas-local] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[cnmas-local] ERROR: %s\n' "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root to run: $* (run this script as root or install sudo)"
    fi
}

# Runs a command as the postgres system user.
as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" -eq 0 ] && have runuser; then
        runuser -u postgres -- "$@"
    elif have sudo; then
        sudo -u postgres "$@"
    else
        die "need root or sudo to run as postgres: $*"
    fi
}

# apt-get install with an `apt-get update` retry (a fresh machine often has empty package lists).
apt_install() {
    have apt-get || die "apt-get not found: install $* by hand (this script targets Debian/Ubuntu)"
    log "installing: $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "$@"; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends "$@"
    fi
}

state_dir() {
    mkdir -p "$CNMAS_STATE_DIR/logs" "$CNMAS_STATE_DIR/pids"
}

# True when something accepts TCP connections on host:port (bash /dev/tcp, 2 s bound).
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# wait_for <seconds> <description> <command...>: polls every 0.5 s until the command succeeds.
wait_for() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "$what: not ready after ${seconds}s"
            return 1
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

pg_ready() {
    pg_isready -q -h "$CNMAS_PG_HOST" -p "$CNMAS_PG_PORT" >/dev/null 2>&1
}

# The newest installed PostgreSQL major version that has a cluster (or binaries), e.g. `15`.
pg_version() {
    local v
    v="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$v" ]; then
        v="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
    fi
    printf '%s' "$v"
}

# Can the services connect (user postgres, TCP, no password)?
pg_auth_ok() {
    have psql || return 0 # no client to check with; the services will tell
    PGCONNECT_TIMEOUT=5 psql "${CNMAS_PG_URL}/postgres" -w -X -q -A -t -c 'select 1' >/dev/null 2>&1
}

pg_trust_help() {
    local hba="/etc/postgresql/<version>/main/pg_hba.conf"
    local v
    v="$(pg_version)"
    [ -n "$v" ] && hba="/etc/postgresql/$v/main/pg_hba.conf"
    cat >&2 <<EOF
[cnmas-local] ERROR: PostgreSQL at ${CNMAS_PG_HOST}:${CNMAS_PG_PORT} is up but does not accept
[cnmas-local]   user "postgres" over TCP without a password (the services use ${CNMAS_PG_URL}/cnmas_<service>).
[cnmas-local] For a local development machine, add this line at the TOP of ${hba}:
[cnmas-local]     host    all    postgres    127.0.0.1/32    trust
[cnmas-local] then reload:  pg_ctlcluster ${v:-<version>} main reload   (or: systemctl reload postgresql)
[cnmas-local] or rerun with CNMAS_PG_CONFIGURE_TRUST=1 as root to let this script do exactly that,
[cnmas-local] or point the scripts at a role with a password:
[cnmas-local]     CNMAS_PG_URL='postgres://USER:PASSWORD@127.0.0.1:5432'   (the role needs CREATEDB)
EOF
}

# Adds `host all postgres 127.0.0.1/32 trust` at the top of pg_hba.conf and reloads.
pg_configure_trust() {
    local hba v
    hba="$(as_postgres psql -X -A -t -q -c 'show hba_file' 2>/dev/null || true)"
    v="$(pg_version)"
    [ -n "$hba" ] || hba="/etc/postgresql/$v/main/pg_hba.conf"
    [ -f "$hba" ] || die "cannot find pg_hba.conf (looked at $hba)"
    log "adding 'host all postgres 127.0.0.1/32 trust' to $hba (local development only)"
    as_root cp -p "$hba" "$hba.cnmas-backup"
    as_root sed -i '1i host    all    postgres    127.0.0.1/32    trust   # added by cnmas deploy/local' "$hba"
    as_postgres psql -X -q -c 'select pg_reload_conf()' >/dev/null
    sleep 1
}

# Makes sure PostgreSQL answers on CNMAS_PG_HOST:CNMAS_PG_PORT and accepts the services' URL:
# installs it (apt-get) when absent, starts the cluster when stopped, waits up to 60 s.
# Records `.local/started-postgres` (the cluster version) when it started the cluster itself.
ensure_postgres() {
    state_dir
    local installed_now=0
    if pg_ready; then
        log "PostgreSQL is running at ${CNMAS_PG_HOST}:${CNMAS_PG_PORT}"
    else
        if ! have pg_ctlcluster || ! have pg_isready; then
            log "PostgreSQL is not installed"
            apt_install postgresql postgresql-client
            installed_now=1
        fi
        local v
        v="$(pg_version)"
        [ -n "$v" ] || die "PostgreSQL is installed but no version found under /usr/lib/postgresql"
        if [ ! -d "/etc/postgresql/$v/main" ]; then
            log "creating PostgreSQL cluster $v/main"
            as_root pg_createcluster "$v" main
        fi
        if ! pg_ready; then # the package's own service may have started it meanwhile
            log "starting PostgreSQL cluster $v/main"
            as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start
            printf '%s\n' "$v" >"$CNMAS_STATE_DIR/started-postgres"
        fi
        wait_for 60 "PostgreSQL at ${CNMAS_PG_HOST}:${CNMAS_PG_PORT}" pg_ready ||
            die "PostgreSQL did not become ready; see /var/log/postgresql/postgresql-$v-main.log (is it listening on port ${CNMAS_PG_PORT}? check port in /etc/postgresql/$v/main/postgresql.conf)"
        log "PostgreSQL is ready"
    fi
    if ! pg_auth_ok; then
        if [ "$installed_now" = 1 ] || [ "${CNMAS_PG_CONFIGURE_TRUST:-0}" = 1 ]; then
            pg_configure_trust
            pg_auth_ok || {
                pg_trust_help
                exit 1
            }
        else
            pg_trust_help
            exit 1
        fi
    fi
}

# ---------------------------------------------------------------------------------------------
# NATS
# ---------------------------------------------------------------------------------------------

nats_up() { port_open "$CNMAS_NATS_HOST" "$CNMAS_NATS_PORT"; }

nats_server_bin() {
    if have nats-server; then
        command -v nats-server
    elif [ -x /usr/sbin/nats-server ]; then
        printf '/usr/sbin/nats-server'
    else
        return 1
    fi
}

# The first protocol line of the server (INFO {...}); empty on failure.
nats_info_line() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$CNMAS_NATS_HOST/$CNMAS_NATS_PORT && head -n 1 <&3" 2>/dev/null || true
}

# Fails when the nats-server binary is older than 2.2 (no JetStream).
nats_check_version() {
    local bin="$1" ver major minor
    ver="$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
    [ -n "$ver" ] || {
        warn "cannot read the version of $bin"
        return 0
    }
    major="${ver%%.*}"
    minor="${ver#*.}"
    if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 2 ]; }; then
        die "$bin is version $ver; JetStream needs nats-server >= 2.2 (CNMAS is tested with 2.9.10). Install a newer one from https://github.com/nats-io/nats-server/releases"
    fi
}

# Makes sure a JetStream-enabled NATS listens on CNMAS_NATS_HOST:CNMAS_NATS_PORT: installs
# nats-server (apt-get; Debian 12 ships 2.9.10) when absent, starts it with -js, waits up to 30 s.
# Records `.local/started-nats` when it started the server itself.
ensure_nats() {
    state_dir
    if nats_up; then
        log "NATS is running at ${CNMAS_NATS_HOST}:${CNMAS_NATS_PORT}"
    else
        local bin
        if ! bin="$(nats_server_bin)"; then
            log "nats-server is not installed"
            apt_install nats-server
            bin="$(nats_server_bin)" || die "nats-server still not found after apt-get install"
        fi
        nats_check_version "$bin"
        local store log_file pidfile="$CNMAS_STATE_DIR/pids/nats-server.pid"
        if [ "$(id -u)" -eq 0 ]; then
            store="${CNMAS_NATS_STORE_DIR:-/var/lib/nats-server}"
            log_file="${CNMAS_NATS_LOG:-/var/log/nats-server.log}"
        else
            store="${CNMAS_NATS_STORE_DIR:-$CNMAS_STATE_DIR/nats}"
            log_file="${CNMAS_NATS_LOG:-$CNMAS_STATE_DIR/logs/nats-server.log}"
        fi
        mkdir -p "$store"
        log "starting nats-server ($bin) on ${CNMAS_NATS_HOST}:${CNMAS_NATS_PORT}, JetStream store $store, log $log_file"
        local args=(-a "$CNMAS_NATS_HOST" -p "$CNMAS_NATS_PORT" -js -sd "$store" -l "$log_file")
        if have start-stop-daemon; then
            # --pidfile: only *our* server counts as "already running" (another nats-server on
            # another port, e.g. a test one, must not make --oknodo skip the start).
            start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$pidfile" \
                --exec "$bin" -- "${args[@]}"
        else
            setsid nohup "$bin" "${args[@]}" </dev/null >/dev/null 2>&1 &
            echo $! >"$pidfile"
        fi
        touch "$CNMAS_STATE_DIR/started-nats"
        wait_for 30 "NATS at ${CNMAS_NATS_HOST}:${CNMAS_NATS_PORT}" nats_up ||
            die "nats-server did not start; see $log_file"
        log "NATS is ready"
    fi
    local info
    info="$(nats_info_line)"
    if [ -n "$info" ] && ! printf '%s' "$info" | grep -q '"jetstream":true'; then
        warn "the NATS server at ${CNMAS_NATS_HOST}:${CNMAS_NATS_PORT} does not announce JetStream; the services need it (start it with -js)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Chromium (browser tests of the web console: tests/tests/console.rs)
# ---------------------------------------------------------------------------------------------

# Installs headless Chromium and chromedriver (Debian packages) when /usr/bin/chromium is missing.
ensure_chromium() {
    if [ -x /usr/bin/chromium ] && have chromedriver; then
        log "Chromium is installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
        return 0
    fi
    apt_install chromium chromium-driver
    [ -x /usr/bin/chromium ] || die "chromium still missing after apt-get install"
}

# Executed rather than sourced: run the functions named on the command line, in order.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 <function>... (e.g. ensure_postgres ensure_nats)" >&2
        exit 2
    fi
    for fn in "$@"; do
        [ "$(type -t "$fn")" = function ] || die "no such function: $fn"
        "$fn"
    done
fi
