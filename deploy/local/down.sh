#!/usr/bin/env bash
# Stops the services started by deploy/local/up.sh: the simulated agents first (SIGINT: they
# record the call in progress), then the services and the console: SIGTERM through their pid
# files, up to 20 s for a graceful shutdown, then SIGKILL. PostgreSQL and NATS keep running, unless --all is given
# AND up.sh started them (it records .local/started-postgres and .local/started-nats).
#
# Usage: deploy/local/down.sh [--all]
set -euo pipefail

# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CNMAS_REPO_ROOT"

ALL=0
for arg in "$@"; do
    case "$arg" in
    --all) ALL=1 ;;
    -h | --help)
        sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $arg (see --help)" ;;
    esac
done

SERVICES=(intake consent scheduler dialer-queue results console)
PIDS="$CNMAS_STATE_DIR/pids"

# The pid in a pid file if that process is alive and its command line contains the pattern.
live_pid() {
    local pidfile="$1" pattern="$2" pid
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
    printf '%s' "$pid"
}

# stop_pids <seconds> <name:pid>...: SIGTERM all, wait, SIGKILL whatever is left.
stop_pids() {
    local grace="$1" entry pid left
    shift
    [ "$#" -gt 0 ] || return 0
    for entry in "$@"; do
        log "stopping ${entry%%:*} (pid ${entry##*:})"
        kill -TERM "${entry##*:}" 2>/dev/null || true
    done
    local deadline=$((SECONDS + grace))
    while :; do
        left=()
        for entry in "$@"; do
            kill -0 "${entry##*:}" 2>/dev/null && left+=("$entry")
        done
        [ "${#left[@]}" -eq 0 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep 0.5
    done
    for entry in "${left[@]}"; do
        pid="${entry##*:}"
        warn "${entry%%:*} (pid $pid) still running after ${grace}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# The simulated agents (CNMAS_DEMO_AGENTS) are clients: stop them before the services, with
# SIGINT (their Ctrl-C) so each finishes and records its call.
sim_pidfile="$PIDS/simulate-agents.pid"
if pid="$(live_pid "$sim_pidfile" simulate-agents)"; then
    log "stopping the simulated agents (pid $pid)"
    kill -INT "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then stop_pids 5 "simulate-agents:$pid"; fi
fi
rm -f "$sim_pidfile"

to_stop=()
for svc in "${SERVICES[@]}"; do
    pidfile="$PIDS/$svc.pid"
    [ -e "$pidfile" ] || continue
    if pid="$(live_pid "$pidfile" "cnmas-$svc")"; then
        to_stop+=("$svc:$pid")
    else
        log "$svc: not running (stale pid file removed)"
    fi
done
if [ "${#to_stop[@]}" -eq 0 ]; then
    log "no service started by up.sh is running"
else
    stop_pids 20 "${to_stop[@]}"
fi
for svc in "${SERVICES[@]}"; do
    rm -f "$PIDS/$svc.pid"
done

if [ "$ALL" = 1 ]; then
    if [ -f "$CNMAS_STATE_DIR/started-nats" ]; then
        nats_pidfile="$PIDS/nats-server.pid"
        if pid="$(live_pid "$nats_pidfile" nats-server)"; then
            stop_pids 20 "nats-server:$pid"
        else
            log "nats-server (started by up.sh) is not running"
        fi
        rm -f "$nats_pidfile" "$CNMAS_STATE_DIR/started-nats"
    else
        log "NATS was not started by up.sh: left running"
    fi
    if [ -f "$CNMAS_STATE_DIR/started-postgres" ]; then
        v="$(cat "$CNMAS_STATE_DIR/started-postgres")"
        [ -n "$v" ] || v="$(pg_version)"
        log "stopping PostgreSQL cluster $v/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$v" main stop || warn "pg_ctlcluster $v main stop failed"
        rm -f "$CNMAS_STATE_DIR/started-postgres"
    else
        log "PostgreSQL was not started by up.sh: left running"
    fi
fi
log "done"
