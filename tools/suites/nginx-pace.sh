#!/bin/sh
# The nginx-pace suite: two nginx workers share one merchant's revoke pace
# through a lua_shared_dict (docs/batches.md). Starts a sandbox and an nginx
# (master + 2 workers, reuseport, a temp prefix), fires N revokes at once
# (spec/nginx/pace_driver.lua), stops nginx by its PID, ends with the line
# "nginx-pace: N passed, N failed".
#   WXPAY_PACE_DICT=nil  the same without the dict (each worker paces alone:
#                        the spreading checks must then fail)
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
LUA=${LUA54:-lua5.4}
work=$(mktemp -d /tmp/wxpay-nginx-pace.XXXXXX) || exit 2
sbdir=$work/sandbox
prefix=$work/nginx
nginx_pid=""

stop_nginx() {
    [ -n "$nginx_pid" ] || return 0
    if kill -0 "$nginx_pid" 2>/dev/null; then
        kill -QUIT "$nginx_pid" 2>/dev/null
        i=0
        while kill -0 "$nginx_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$nginx_pid" 2>/dev/null && kill -KILL "$nginx_pid" 2>/dev/null
    fi
    wait "$nginx_pid" 2>/dev/null
    nginx_pid=""
}
cleanup() {
    stop_nginx
    sandbox/ctl stop "$sbdir" > /dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "nginx-pace: 0 passed, 1 failed"; exit 1' INT TERM HUP
setup_failed() {
    echo "nginx-pace suite: setup failed: $1"
    [ -f "$prefix/logs/error.log" ] && tail -n 30 "$prefix/logs/error.log"
    echo "nginx-pace: 0 passed, 1 failed"
    exit 1
}

command -v nginx > /dev/null || setup_failed "no nginx binary"
if [ ! -f build/luajit/wxpay/core.so ]; then
    make --no-print-directory build LUA=luajit > "$work/build.log" 2>&1 || setup_failed "make build LUA=luajit"
fi
sandbox/ctl start "$sbdir" > /dev/null 2>&1 || setup_failed "the sandbox did not start"
json="$sbdir/sandbox.json"
ca_file=$(sed -n 's/^ *"ca_file": *"\([^"]*\)".*/\1/p' "$json" | head -n 1)
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
    || setup_failed "no free port"
user=""
[ "$(id -u)" = 0 ] && user="user root;"   # workers must read the sandbox's 0600 key files
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@REPO@|$ROOT|g" -e "s|@CA_FILE@|$ca_file|g" \
    -e "s|@SANDBOX_JSON@|$json|g" -e "s|@PORT@|$port|g" -e "s|@USER@|$user|g" \
    -e "s|@RATE@|${WXPAY_PACE_RATE:-20}|g" -e "s|@DICT@|${WXPAY_PACE_DICT:-\"wxpay_pace\"}|g" \
    spec/nginx/pace.conf.in > "$prefix/conf/nginx.conf"
nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log" \
    > "$prefix/logs/stdout.log" 2>&1 < /dev/null &
nginx_pid=$!
i=0
until curl -s -m 1 -o /dev/null "http://127.0.0.1:$port/dict"; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$prefix/logs/stdout.log"; setup_failed "nginx exited"; }
    i=$((i + 1)); [ $i -lt 100 ] || setup_failed "nginx did not answer within 10 s"
    sleep 0.1
done
mkdir -p "$work/out"
WXPAY_NGINX_URL="http://127.0.0.1:$port" WXPAY_SANDBOX_JSON="$json" WXPAY_PACE_DIR="$work/out" \
WXPAY_PACE_N="${WXPAY_PACE_N:-40}" WXPAY_PACE_RATE="${WXPAY_PACE_RATE:-20}" \
    $LUA spec/nginx/pace_driver.lua | tee "$work/run.out"
stop_nginx
errs=$(grep -cE '\[(error|crit|alert|emerg)\]' "$prefix/logs/error.log")
line=$(grep -E '^counts: [0-9]+ [0-9]+$' "$work/run.out" | tail -n 1)
if [ -z "$line" ]; then echo "nginx-pace: 0 passed, 1 failed"; exit 1; fi
set -- $line
p=$2 f=$3
if [ "$errs" -eq 0 ]; then p=$((p + 1)); echo "ok   no error in nginx's log"
else f=$((f + 1)); echo "FAIL $errs error line(s) in nginx's log:"; grep -E '\[(error|crit|alert|emerg)\]' "$prefix/logs/error.log" | head -n 5; fi
echo "nginx-pace: $p passed, $f failed"
[ "$f" -eq 0 ]
