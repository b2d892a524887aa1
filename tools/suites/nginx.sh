#!/bin/sh
# The nginx suite: the library inside a real nginx (ngx_lua), against the sandbox.
#
# Starts a sandbox and one nginx (one worker, master_process off, a temp prefix),
# runs spec/nginx/driver.lua (Lua 5.4 + the curl CLI) against it, stops nginx,
# checks its error log; then a second nginx (4 workers under a master process,
# a lua_shared_dict: spec/nginx/workers.conf.in) for spec/nginx/workers_driver.lua;
# and ends with the line "nginx: N passed, N failed".
# Everything it starts is stopped by PID (trap), whatever happens.
#   WXPAY_NGINX_KEEP=1  keep the temp directory (logs, nginx.conf) for a look
#   WXPAY_NGINX_ONLY=workers  only the second run (quicker while working on it)
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
LUA=${LUA54:-lua5.4}

work=$(mktemp -d /tmp/wxpay-nginx.XXXXXX) || exit 2
sbdir=$work/sandbox
prefix=$work/nginx
nginx_pid=""

stop_nginx() {
    [ -n "$nginx_pid" ] || return 0
    if kill -0 "$nginx_pid" 2>/dev/null; then
        kill -QUIT "$nginx_pid" 2>/dev/null          # graceful
        i=0
        while kill -0 "$nginx_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$nginx_pid" 2>/dev/null; then
            kill -KILL "$nginx_pid" 2>/dev/null
        fi
    fi
    wait "$nginx_pid" 2>/dev/null
    nginx_pid=""
}

cleanup() {
    stop_nginx
    sandbox/ctl stop "$sbdir" > /dev/null 2>&1
    if [ -n "${WXPAY_NGINX_KEEP:-}" ]; then echo "nginx suite: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo "nginx suite: interrupted"; echo "nginx: 0 passed, 1 failed"; exit 1' INT TERM HUP

setup_failed() {
    echo "nginx suite: setup failed: $1"
    if [ -f "$prefix/logs/error.log" ]; then tail -n 30 "$prefix/logs/error.log"; fi
    echo "nginx: 0 passed, 1 failed"
    exit 1
}

command -v nginx > /dev/null || setup_failed "no nginx binary"
for m in ndk_http_module ngx_http_lua_module; do
    [ -f "/usr/lib/nginx/modules/$m.so" ] || setup_failed "missing /usr/lib/nginx/modules/$m.so"
done
command -v curl > /dev/null || setup_failed "no curl CLI"
if [ ! -f build/luajit/wxpay/core.so ]; then
    make --no-print-directory build LUA=luajit > "$work/build.log" 2>&1 \
        || { cat "$work/build.log"; setup_failed "make build LUA=luajit"; }
fi

# 1. the sandbox
sandbox/ctl start "$sbdir" > /dev/null || setup_failed "the sandbox did not start"
json="$sbdir/sandbox.json"
field() { sed -n "s/^ *\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$json" | head -n 1; }
control_url=$(field control_url)
sandbox_port=$(field base_url); sandbox_port=${sandbox_port##*:}
ca_file=$(field ca_file)
[ -n "$control_url" ] && [ -n "$sandbox_port" ] || setup_failed "cannot read $json"

# an order the worker queries in init_worker and revokes from a timer at start-up
boot_order="BOOT$(date +%s)$$"
curl -s -f -m 10 -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "{\"out_trade_no\":\"$boot_order\",\"trade_state\":\"SUCCESS\"}" \
    "$control_url/orders" || setup_failed "seeding the boot order"

# 2. free ports (nginx http, chunking proxy, untrusted TLS, raw answers, one nobody listens on)
ports=$(/usr/bin/python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
) || setup_failed "no free ports"
set -- $ports
port=$1 proxy_port=$2 untrusted_port=$3 raw_port=$4 refused_port=$5 workers_port=$6

# 3. nginx: a prefix, a certificate no trusted CA signed, the conf
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
    -keyout "$prefix/untrusted.key" -out "$prefix/untrusted.pem" > "$work/openssl.log" 2>&1 \
    || { cat "$work/openssl.log"; setup_failed "openssl req"; }
sed -e "s|@PREFIX@|$prefix|g" -e "s|@REPO@|$ROOT|g" -e "s|@CA_FILE@|$ca_file|g" \
    -e "s|@SANDBOX_JSON@|$json|g" -e "s|@SANDBOX_DIR@|$sbdir|g" \
    -e "s|@SANDBOX_PORT@|$sandbox_port|g" -e "s|@PORT@|$port|g" \
    -e "s|@PROXY_PORT@|$proxy_port|g" -e "s|@UNTRUSTED_PORT@|$untrusted_port|g" \
    -e "s|@RAW_PORT@|$raw_port|g" -e "s|@REFUSED_PORT@|$refused_port|g" -e "s|@BOOT_ORDER@|$boot_order|g" \
    spec/nginx/nginx.conf.in > "$prefix/conf/nginx.conf"

if [ "${WXPAY_NGINX_ONLY:-}" = workers ]; then
    echo "counts: 0 0" > "$work/run.out"; echo "counts: 0 0" > "$work/logs.out"
else
nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log" \
    > "$prefix/logs/stdout.log" 2>&1 < /dev/null &
nginx_pid=$!
i=0
until curl -s -f -m 1 -o /dev/null "http://127.0.0.1:$port/trivial"; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$prefix/logs/stdout.log"; setup_failed "nginx exited"; }
    i=$((i + 1))
    [ $i -lt 100 ] || setup_failed "nginx did not answer within 10 s"
    sleep 0.1
done

# 4. the tests, then nginx stops (so the log is complete), then the log checks
export WXPAY_NGINX_URL="http://127.0.0.1:$port"
export WXPAY_SANDBOX_JSON="$json"
export WXPAY_NGINX_LOGS="$prefix/logs"
export WXPAY_BOOT_ORDER="$boot_order"
export WXPAY_NGINX_PID="$nginx_pid"
$LUA spec/nginx/driver.lua run | tee "$work/run.out"
stop_nginx
$LUA spec/nginx/driver.lua logs | tee "$work/logs.out"
fi

# 5. the second nginx: 4 workers under a master process (stopped by its PID),
#    sharing the certificate download through a lua_shared_dict
prefix=$work/nginx-workers
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@REPO@|$ROOT|g" -e "s|@CA_FILE@|$ca_file|g" \
    -e "s|@SANDBOX_JSON@|$json|g" -e "s|@PORT@|$workers_port|g" \
    -e "s|@USER@|$(id -un) $(id -gn)|g" spec/nginx/workers.conf.in > "$prefix/conf/nginx.conf"
nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -e "$prefix/logs/error.log" \
    > "$prefix/logs/stdout.log" 2>&1 < /dev/null &
nginx_pid=$!
i=0
until curl -s -f -m 1 -o /dev/null "http://127.0.0.1:$workers_port/boot"; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$prefix/logs/stdout.log"; setup_failed "nginx (4 workers) exited"; }
    i=$((i + 1))
    [ $i -lt 100 ] || setup_failed "nginx (4 workers) did not answer within 10 s"
    sleep 0.1
done
export WXPAY_NGINX_URL="http://127.0.0.1:$workers_port"
export WXPAY_SANDBOX_JSON="$json"
export WXPAY_NGINX_LOGS="$prefix/logs"
$LUA spec/nginx/workers_driver.lua run | tee "$work/workers-run.out"
stop_nginx
$LUA spec/nginx/workers_driver.lua logs | tee "$work/workers-logs.out"

passed=0; failed=0
for f in "$work/run.out" "$work/logs.out" "$work/workers-run.out" "$work/workers-logs.out"; do
    line=$(grep -E '^counts: [0-9]+ [0-9]+$' "$f" | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)); echo "nginx suite: $(basename "$f" .out) did not finish"
    else
        set -- $line
        passed=$((passed + $2)); failed=$((failed + $3))
    fi
done
echo "nginx: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
