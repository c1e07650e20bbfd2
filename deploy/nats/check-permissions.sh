#!/usr/bin/env bash
# Checks deploy/nats/cnmas-funds.conf:
#   1. `nats-server -t` (the configuration parses),
#   2. starts a throwaway nats-server with it (free port from 14222, JetStream in a temporary
#      directory),
#   3. speaks the NATS text protocol over bash /dev/tcp (no `nats` CLI needed) to check that
#      fund 751 can publish its submissions, create and read its own consumer on CNMAS_OUT, and
#      is refused everything belonging to fund 971 or to the shared inbox,
#   4. optionally runs a command against that server (e.g. a Rust test), with
#      CNMAS_NATS_PERMISSIONS_URL=nats://127.0.0.1:<port> exported, then stops the server.
#
# Usage: deploy/nats/check-permissions.sh [command args...]
#   e.g. deploy/nats/check-permissions.sh cargo test -p cnmas-system-tests nats_permissions
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF="$HERE/cnmas-funds.conf"
log() { printf '[check-permissions] %s\n' "$*" >&2; }
die() {
    printf '[check-permissions] ERROR: %s\n' "$*" >&2
    exit 1
}

NATS_SERVER="$(command -v nats-server || true)"
[ -n "$NATS_SERVER" ] || { [ -x /usr/sbin/nats-server ] && NATS_SERVER=/usr/sbin/nats-server; }
[ -n "$NATS_SERVER" ] || die "nats-server not found (apt-get install nats-server)"

log "validating $CONF"
"$NATS_SERVER" -c "$CONF" -t

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
PORT="${CNMAS_CHECK_NATS_PORT:-14222}"
while port_open "$PORT"; do PORT=$((PORT + 1)); done

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# nats-server 2.9 refuses `-sd` when the file sets store_dir ("Duplicate 'store_dir'"), so run a
# copy whose store_dir points into the temporary directory; -a/-p override the listen address.
sed "s|^\([[:space:]]*store_dir:\).*|\1 \"$WORK/js\"|" "$CONF" >"$WORK/cnmas-funds.conf"
grep -q "store_dir: \"$WORK/js\"" "$WORK/cnmas-funds.conf" || die "could not rewrite store_dir in a copy of $CONF"
"$NATS_SERVER" -c "$WORK/cnmas-funds.conf" -a 127.0.0.1 -p "$PORT" -js -l "$WORK/nats.log" &
SERVER_PID=$!
for _ in $(seq 1 50); do
    port_open "$PORT" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "nats-server exited: $(tail -n 20 "$WORK/nats.log" 2>/dev/null)"
    sleep 0.2
done
port_open "$PORT" || die "nats-server did not listen on $PORT"
log "throwaway nats-server (pid $SERVER_PID) on 127.0.0.1:$PORT"

# session <user> <password>: reads protocol lines on stdin (`PUB subj [reply] <payload>` is
# expanded to the wire form), sends them after CONNECT, and prints everything the server sends
# back until it has been quiet for a second.
session() {
    local user="$1" pass="$2" fd line subj rest payload reply
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
    IFS= read -r -t 2 -u "$fd" line || true # INFO
    printf 'CONNECT {"verbose":false,"pedantic":false,"user":"%s","pass":"%s","protocol":1,"name":"check-permissions"}\r\n' \
        "$user" "$pass" >&"$fd"
    while IFS= read -r line; do
        case "$line" in
        PUB\ *)
            # PUB <subject> [<reply>] <payload…>; a reply token starts with _INBOX
            read -r _ subj rest <<<"$line"
            reply=""
            case "$rest" in _INBOX*)
                reply="${rest%% *}"
                [ "$rest" = "$reply" ] && rest="" || rest="${rest#* }"
                ;;
            esac
            payload="$rest"
            printf 'PUB %s %s%s\r\n%s\r\n' "$subj" "${reply:+$reply }" "${#payload}" "$payload" >&"$fd"
            ;;
        *) printf '%s\r\n' "$line" >&"$fd" ;;
        esac
    done
    printf 'PING\r\n' >&"$fd"
    while IFS= read -r -t 1 -u "$fd" line 2>/dev/null; do
        line="${line%$'\r'}"
        [ "$line" = PING ] && printf 'PONG\r\n' >&"$fd"
        printf '%s\n' "$line"
    done
    exec {fd}>&-
}

FAILED=0
pass() { log "ok:   $1"; }
fail() {
    log "FAIL: $1"
    printf '%s\n' "$2" | sed 's/^/        /' >&2
    FAILED=1
}
# expect <description> <output> <grep -E pattern that must match> [pattern that must not match]
expect() {
    if printf '%s' "$2" | grep -Eq -- "$3" && { [ -z "${4:-}" ] || ! printf '%s' "$2" | grep -Eq -- "$4"; }; then
        pass "$1"
    else
        fail "$1" "$2"
    fi
}

F751=(cpam-751 change-me-751)
F971=(cgss-971 change-me-971)
SVC=(svc-results change-me-results)
VIOLATION="Permissions Violation"

# --- set-up as a service: streams, one result for each fund -----------------------------------
out="$(session "${SVC[@]}" <<'EOF'
SUB _INBOX.svc 1
PUB $JS.API.STREAM.CREATE.CNMAS_IN _INBOX.svc {"name":"CNMAS_IN","subjects":["cnmas.in.v1.>"],"storage":"memory"}
PUB $JS.API.STREAM.CREATE.CNMAS_OUT _INBOX.svc {"name":"CNMAS_OUT","subjects":["cnmas.out.v1.>"],"storage":"memory"}
PUB cnmas.out.v1.751.result _INBOX.svc result-for-751
PUB cnmas.out.v1.971.result _INBOX.svc result-for-971
EOF
)"
expect "a service creates the streams and publishes results" "$out" 'stream_create_response' "$VIOLATION|\"error\""

# --- authentication ----------------------------------------------------------------------------
out="$(session cpam-751 wrong-password </dev/null)"
expect "a wrong password is refused" "$out" 'Authorization Violation'

# --- fund 751: what it may do ------------------------------------------------------------------
out="$(session "${F751[@]}" <<'EOF'
SUB _INBOX_751.a 1
PUB cnmas.in.v1.751.contact _INBOX_751.a submission-from-751
EOF
)"
expect "751 publishes to cnmas.in.v1.751.contact (JetStream ack on its inbox)" "$out" '"stream":"CNMAS_IN"' "$VIOLATION"

out="$(session "${F751[@]}" <<'EOF'
SUB _INBOX_751.c 1
PUB $JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_751.cnmas.out.v1.751.> _INBOX_751.c {"stream_name":"CNMAS_OUT","config":{"durable_name":"fund_751","name":"fund_751","filter_subject":"cnmas.out.v1.751.>","ack_policy":"explicit","deliver_policy":"all"}}
EOF
)"
expect "751 creates its durable consumer fund_751 with filter cnmas.out.v1.751.>" "$out" 'consumer_create_response' "$VIOLATION|\"error\""

out="$(session "${F751[@]}" <<'EOF'
SUB _INBOX_751.n 1
PUB $JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_751 _INBOX_751.n {"batch":1,"expires":500000000}
EOF
)"
expect "751 fetches its own result (and only its own)" "$out" 'result-for-751' "result-for-971|$VIOLATION"
ack="$(printf '%s\n' "$out" | sed -n 's/^MSG [^ ]* [^ ]* \(\$JS\.ACK\.[^ ]*\) .*/\1/p' | head -n 1)"
if [ -n "$ack" ]; then
    out="$(printf 'PUB %s\n' "$ack" | session "${F751[@]}")"
    expect "751 acks it ($ack)" "$out" '^$|PONG' "$VIOLATION"
else
    fail "751 got no ack subject" "$out"
fi

out="$(session "${F751[@]}" <<'EOF'
SUB _INBOX_751.i 1
PUB $JS.API.CONSUMER.INFO.CNMAS_OUT.fund_751 _INBOX_751.i
EOF
)"
expect "751 reads its consumer's info (1 acked)" "$out" '"ack_floor":\{"consumer_seq":1' "$VIOLATION"

# --- fund 751: what it may not do --------------------------------------------------------------
check_denied() { # <description> <protocol lines>
    local o
    o="$(printf '%s\n' "$2" | session "${F751[@]}")"
    expect "$1" "$o" "$VIOLATION"
}
check_denied "751 may not publish to fund 971's inbound subject" \
    'PUB cnmas.in.v1.971.contact forged'
check_denied "751 may not publish results" \
    'PUB cnmas.out.v1.751.result forged'
check_denied "751 may not subscribe to fund 971's results" \
    'SUB cnmas.out.v1.971.> 1'
check_denied "751 may not subscribe to every result" \
    'SUB cnmas.out.v1.> 1'
check_denied "751 may not subscribe to the shared inbox _INBOX.>" \
    'SUB _INBOX.> 1'
check_denied "751 may not subscribe to fund 971's inbox" \
    'SUB _INBOX_971.> 1'
check_denied "751 may not subscribe to internal events" \
    'SUB cnmas.evt.> 1'
check_denied "751 may not create a consumer filtered on fund 971's results" \
    'PUB $JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_751.cnmas.out.v1.971.> _INBOX_751.x {}'
check_denied "751 may not use the unpinned durable-create API" \
    'PUB $JS.API.CONSUMER.DURABLE.CREATE.CNMAS_OUT.fund_751 _INBOX_751.x {}'
check_denied "751 may not create an unfiltered ephemeral consumer" \
    'PUB $JS.API.CONSUMER.CREATE.CNMAS_OUT _INBOX_751.x {}'
check_denied "751 may not create a consumer with another name" \
    'PUB $JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_971.cnmas.out.v1.751.> _INBOX_751.x {}'
check_denied "751 may not read the stream info (all funds' subjects)" \
    'PUB $JS.API.STREAM.INFO.CNMAS_OUT _INBOX_751.x'
check_denied "751 may not delete the stream" \
    'PUB $JS.API.STREAM.DELETE.CNMAS_OUT _INBOX_751.x'
check_denied "751 may not fetch from fund 971's consumer" \
    'PUB $JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_971 _INBOX_751.x {"batch":1}'
check_denied "751 may not ack fund 971's messages" \
    'PUB $JS.ACK.CNMAS_OUT.fund_971.1.2.2.0.0'

# The subject's filter must equal the body's filter_subject: the server, not only the
# permission, refuses a body asking for another fund's results.
out="$(session "${F751[@]}" <<'EOF'
SUB _INBOX_751.m 1
PUB $JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_751_replay.cnmas.out.v1.751.> _INBOX_751.m {"stream_name":"CNMAS_OUT","config":{"durable_name":"fund_751_replay","name":"fund_751_replay","filter_subject":"cnmas.out.v1.971.>","ack_policy":"explicit"}}
EOF
)"
expect "the server refuses a body filter that differs from the subject's filter" "$out" '"error"' "consumer_create_response.*\"config\""

# --- fund 971 cannot touch 751's consumer ------------------------------------------------------
out="$(printf '%s\n' 'PUB $JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_751 _INBOX_971.x {"batch":1}' | session "${F971[@]}")"
expect "971 may not fetch from fund 751's consumer" "$out" "$VIOLATION"

if [ "$FAILED" != 0 ]; then
    log "some checks failed; server log: $WORK/nats.log (kept until exit)"
    tail -n 20 "$WORK/nats.log" >&2 || true
    exit 1
fi
log "all permission checks passed"

if [ "$#" -gt 0 ]; then
    export CNMAS_NATS_PERMISSIONS_URL="nats://127.0.0.1:$PORT"
    log "running with CNMAS_NATS_PERMISSIONS_URL=$CNMAS_NATS_PERMISSIONS_URL: $*"
    set +e
    "$@"
    rc=$?
    set -e
    exit "$rc"
fi
