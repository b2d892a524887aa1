#!/bin/sh
# The README's nginx.conf and payments.lua, verbatim, in a real nginx (master + workers
# running as the conf's `user`), against the sandbox.  Only these are filled in:
# /usr/local -> wxpay installed by `make install LUA=luajit PREFIX=<tmp>/usr`,
# /etc/nginx/lua/ and /etc/wxpay/ -> temp dirs (owned and moded as the README says),
# the CA bundle -> a copy of the sandbox's CA, the listen port -> a free one, the resolver -> a
# UDP port on 127.0.0.1 that swallows queries (resolver_timeout -> 30s: the library's
# timeout_ms must bound DNS itself).  nginx runs with -p <tmp> -e <tmp>/error.log
# -g "daemon off; pid <tmp>/nginx.pid;".
# Checks: a revoke of an escaped order number answers 200 and revokes it; an unknown
# order answers 404 with its code; a base_url whose DNS never answers gives TIMEOUT
# within timeout_ms; a key the worker user cannot read gives a logged CONFIG_ERROR
# (tostring(err)) and 503s.  Ends with "readme-nginx: N passed, N failed".
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
work=$(mktemp -d /tmp/wxpay-readme-nginx.XXXXXX) || exit 2
chmod 0711 "$work"            # the workers (www-data) traverse it to reach usr/, lua/, etc/
sb=$work/sandbox
nginx_pid=""; dns_pid=""
passed=0; failed=0

stop_nginx() {
    [ -n "$nginx_pid" ] || return 0
    kill -QUIT "$nginx_pid" 2>/dev/null
    i=0; while kill -0 "$nginx_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$nginx_pid" 2>/dev/null && kill -KILL "$nginx_pid" 2>/dev/null
    wait "$nginx_pid" 2>/dev/null
    nginx_pid=""
}
cleanup() {
    stop_nginx
    [ -n "$dns_pid" ] && kill "$dns_pid" 2>/dev/null
    sandbox/ctl stop "$sb" > /dev/null 2>&1
    if [ -n "${WXPAY_NGINX_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo "readme-nginx: 0 passed, 1 failed"; exit 1' INT TERM HUP
setup_failed() { echo "readme-nginx suite: setup failed: $1"; [ -f "${2:-/nonexistent}" ] && tail -n 20 "$2"
    echo "readme-nginx: $passed passed, $((failed + 1)) failed"; exit 1; }
ok() { passed=$((passed + 1)); echo "ok - $1"; }
nok() { failed=$((failed + 1)); echo "not ok - $1"; }

user=$(lua5.4 spec/readme_blocks.lua README.md nginx conf | sed -n 's/^user  *\([a-z_-]*\).*/\1/p')
[ -n "$user" ] && id "$user" > /dev/null 2>&1 || setup_failed "the README's nginx.conf names no existing user ($user)"
[ "$(id -u)" = 0 ] || setup_failed "must run as root (the master switches the workers to $user)"

# wxpay installed as the README says, into a temp prefix
make --no-print-directory -s install LUA=luajit PREFIX="$work/usr" > "$work/install.log" 2>&1 \
    || setup_failed "make install LUA=luajit" "$work/install.log"
mkdir -p "$work/lua" "$work/logs" "$work/conf"
lua5.4 spec/readme_blocks.lua README.md nginx handler > "$work/handler.lua" || setup_failed "no handler block"
head -n 1 "$work/handler.lua" | grep -q '^-- /etc/nginx/lua/payments.lua$' || setup_failed "the handler does not say where it goes"
sed "s|/etc/wxpay/|$work/etc/wxpay/|g" "$work/handler.lua" > "$work/lua/payments.lua"
chmod 0644 "$work/lua/payments.lua"

sandbox/ctl start "$sb" > /dev/null 2> "$work/ctl.log" || setup_failed "sandbox" "$work/ctl.log"
control=$(sed -n 's/^ *"control_url": *"\([^"]*\)".*/\1/p' "$sb/sandbox.json")
sport=$(sed -n 's/^ *"base_url": *"https:\/\/localhost:\([0-9]*\)".*/\1/p' "$sb/sandbox.json")

# a free TCP port for nginx, and a UDP "resolver" that reads queries and never answers
set -- $(/usr/bin/python3 -c '
import socket
t = socket.socket(); t.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(t.getsockname()[1], u.getsockname()[1])')
port=$1; dns_port=$2
/usr/bin/python3 -c '
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", int(sys.argv[1])))
while True: u.recv(4096)' "$dns_port" &
dns_pid=$!

lua5.4 spec/readme_blocks.lua README.md nginx conf | sed \
    -e "s|/usr/local/|$work/usr/|g" -e "s|/etc/nginx/lua/|$work/lua/|g" \
    -e "s|/etc/ssl/certs/ca-certificates.crt|$work/ca.pem|" \
    -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$port;|" \
    -e "s|resolver 127.0.0.53 |resolver 127.0.0.1:$dns_port |" -e "s|resolver_timeout 5s;|resolver_timeout 30s;|" \
    > "$work/conf/nginx.conf"
install -m 0644 "$sb/creds/ca.pem" "$work/ca.pem"    # the workers load it
for want in "$work/usr/" "$work/lua/" "$work/ca.pem" "127.0.0.1:$port;" "127.0.0.1:$dns_port" "resolver_timeout 30s"; do
    grep -qF "$want" "$work/conf/nginx.conf" || setup_failed "the README's nginx.conf no longer has what the test fills in ($want)"
done

# /etc/wxpay as the README says: owned by the worker user, 0700, files 0600.  merchant.json
# = the sandbox's client.json with the key and platform certificate copied beside it.
etc=$work/etc/wxpay
write_merchant() { # key-owner base_url|- timeout_ms|- keep|drop-apiv3
    rm -rf "$etc"; install -d -m 0700 -o "$user" -g "$user" "$etc"
    install -m 0600 -o "$1" -g "$1" "$sb/creds/apiclient_key.pem" "$etc/apiclient_key.pem"
    install -m 0644 "$sb/creds/platform_cert.pem" "$etc/platform_cert.pem"
    /usr/bin/python3 - "$sb/client.json" "$etc/merchant.json" "$2" "$3" "$work/ca.pem" "$4" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["ca_file"] = sys.argv[5]                      # the sandbox's CA (libcurl in init_worker)
c["platform_certs"] = ["platform_cert.pem"]     # copied beside it
if sys.argv[6] == "drop-apiv3": del c["apiv3_key"]  # one request per call (no certificate download)
c["private_key"] = "apiclient_key.pem"          # relative to merchant.json
if sys.argv[3] != "-": c["base_url"] = sys.argv[3]
if sys.argv[4] != "-": c["timeout_ms"] = int(sys.argv[4])
json.dump(c, open(sys.argv[2], "w"))
EOF
    chown "$user:$user" "$etc/merchant.json"; chmod 0600 "$etc/merchant.json"
}

start_nginx() {
    echo "=== start" >> "$work/logs/error.log"
    nginx -p "$work" -c "$work/conf/nginx.conf" -e "$work/logs/error.log" \
        -g "daemon off; pid $work/nginx.pid;" > "$work/logs/stdout.log" 2>&1 < /dev/null &
    nginx_pid=$!
    i=0
    until curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; do
        kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/logs/stdout.log"; setup_failed "nginx exited" "$work/logs/error.log"; }
        i=$((i + 1)); [ $i -lt 50 ] || setup_failed "nginx did not answer" "$work/logs/error.log"
        sleep 0.1
    done
}

get() { # path -> "STATUS SECONDS" on stdout, body in $work/body
    rm -f "$work/body"
    curl -s -m 30 -o "$work/body" -w '%{http_code} %{time_total}' "http://127.0.0.1:$port$1"
}
state() { curl -s -m 10 "$control/orders/$1" | sed -n 's/.*"trade_state": *"\([A-Z]*\)".*/\1/p'; }
seed() { curl -s -f -m 10 -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "{\"out_trade_no\":\"$1\",\"trade_state\":\"SUCCESS\"}" "$control/orders"; }

# 1. as written: a revoke through cosockets; the order number arrives escaped
write_merchant "$user" - - keep
start_nginx
no="RD-$$-1"
seed "$no" || setup_failed "seeding"
set -- $(get "/pay/revoke?out_trade_no=RD%2D$$%2D1")
if [ "$1" = 200 ] && grep -q '"ok":true' "$work/body" && [ "$(state "$no")" = REVOKED ]; then
    ok "the README's handler revokes an escaped order number (200, REVOKED)"
else nok "revoke through the README's handler: HTTP $1 $(cat "$work/body"), order $(state "$no")"; fi
ps -o user= -p "$(pgrep -P "$nginx_pid" | head -n 1)" 2>/dev/null | grep -q "$user" \
    && ok "the workers run as $user and read the key (0600, theirs)" || nok "the workers do not run as $user"

set -- $(get "/pay/revoke?out_trade_no=NO-SUCH-$$")
if [ "$1" = 404 ] && grep -q '"code":"ORDER_NOT_EXIST"' "$work/body" && grep -q '"request_id"' "$work/body"; then
    ok "an unknown order answers 404 ORDER_NOT_EXIST with its request id"
else nok "unknown order: HTTP $1 $(cat "$work/body")"; fi
set -- $(get "/pay/revoke?out_trade_no=bad%20no")
[ "$1" = 400 ] && grep -q INVALID_ARGUMENT "$work/body" && ok "a bad order number answers 400 INVALID_ARGUMENT" \
    || nok "bad order number: HTTP $1 $(cat "$work/body")"
stop_nginx

# 2. DNS that never answers: timeout_ms (1500) bounds the call, not resolver_timeout (30 s)
write_merchant "$user" "https://pay.wxpay-dns-test.invalid:$sport" 1500 drop-apiv3
start_nginx
set -- $(get "/pay/revoke?out_trade_no=DNS$$")
secs=${2:-99}
if [ "$1" = 504 ] && grep -q '"code":"TIMEOUT"' "$work/body" && awk "BEGIN{exit !($secs < 2.5)}"; then
    ok "a dead resolver: 504 TIMEOUT after ${secs}s (timeout_ms 1500, resolver_timeout 30s)"
else nok "dead resolver: HTTP $1 after ${secs}s: $(cat "$work/body")"; fi
set -- $(get "/pay/revoke?out_trade_no=DNS$$")
secs=${2:-99}
[ "$1" = 504 ] && awk "BEGIN{exit !($secs < 2.5)}" && ok "and again on the next request (${secs}s)" \
    || nok "dead resolver, second request: HTTP $1 after ${secs}s"
stop_nginx

# 3. a key the worker user cannot read: the log says why, requests get 503
write_merchant root - - keep
start_nginx
set -- $(get "/pay/revoke?out_trade_no=ANY$$")
if [ "$1" = 503 ] && grep -q '"code":"CONFIG_ERROR"' "$work/body"; then
    ok "an unreadable key: 503 CONFIG_ERROR"
else nok "unreadable key: HTTP $1 $(cat "$work/body")"; fi
stop_nginx
if grep -q 'wxpay: cannot create the client: CONFIG_ERROR: private_key is not readable' "$work/logs/error.log" \
    && ! grep -q "unknown error\|attempt to index" "$work/logs/error.log"; then
    ok "init_worker logs the error object as one line (tostring(err))"
else nok "the error log:"; grep -i "wxpay\|error" "$work/logs/error.log" | tail -n 5; fi

echo "readme-nginx: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
