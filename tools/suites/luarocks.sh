#!/bin/sh
# The LuaRocks suite: `luarocks make --deps-mode=none wxpay-scm-1.rockspec` in a fresh
# copy of the checkout (its tracked files as they are now), with Debian's luarocks,
# for its default Lua (5.1) and with --lua-version 5.4, each into a temporary --tree.
# Checks: the build works with no extra variables (multiarch libcurl headers), leaves
# the copy exactly as it was (git status empty), installs the wxpay command, which
# then runs and revokes against a sandbox under both Luas; the library revokes under
# plain lua5.1; an unbuilt checkout's bin/wxpay says "run make" (exit 2).
# Ends with "luarocks: N passed, N failed".  Everything started is stopped by PID.
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
work=$(mktemp -d /tmp/wxpay-luarocks.XXXXXX) || exit 2
sb=$work/sandbox
trap 'sandbox/ctl stop "$sb" > /dev/null 2>&1; rm -rf "$work"' EXIT
trap 'echo "luarocks: 0 passed, 1 failed"; exit 1' INT TERM HUP
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
nok() { failed=$((failed + 1)); echo "not ok - $1"; [ -n "${2:-}" ] && sed 's/^/    /' "$2" | tail -n 15; }
check() { name=$1; shift; if "$@" > "$work/out" 2>&1; then ok "$name"; else nok "$name" "$work/out"; fi; }

for tool in luarocks lua5.1 git; do
    command -v $tool > /dev/null || { echo "luarocks suite: no $tool (make deps installs it)"; echo "luarocks: 0 passed, 1 failed"; exit 1; }
done

# a fresh clone of what is tracked here, as the files are now
src=$work/clone
mkdir -p "$src"
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$src"
( cd "$src" && git init -q && git add -A && git -c user.name=t -c user.email=t@t.invalid commit -qm clone ) \
    || { echo "luarocks: 0 passed, 1 failed"; exit 1; }

clean() { [ -z "$(cd "$src" && git status --porcelain --ignored)" ]; }

( cd "$src" && luarocks make --deps-mode=none --tree "$work/t51" wxpay-scm-1.rockspec ) > "$work/b51" 2>&1 \
    && ok "luarocks make (default Lua 5.1), no extra variables" || nok "luarocks make (default Lua 5.1)" "$work/b51"
if clean; then ok "the clone is clean after the 5.1 build"
else (cd "$src" && git status --porcelain --ignored) > "$work/out"; nok "the clone is clean after the 5.1 build" "$work/out"; fi
( cd "$src" && luarocks --lua-version 5.4 make --deps-mode=none --tree "$work/t54" wxpay-scm-1.rockspec ) \
    > "$work/b54" 2>&1 && ok "luarocks --lua-version 5.4 make" || nok "luarocks --lua-version 5.4 make" "$work/b54"
if clean; then ok "the clone is clean after the 5.4 build"
else (cd "$src" && git status --porcelain --ignored) > "$work/out"; nok "the clone is clean after the 5.4 build" "$work/out"; fi

# run CMD... with the paths of tree T (as `eval "$(luarocks path --tree T)"` sets them)
in_tree() { v=$1; t=$2; shift 2
    ( cd "$work" && eval "$(luarocks --lua-version "$v" path --tree "$t")" && "$@" ); }

in_tree 5.1 "$work/t51" "$work/t51/bin/wxpay" --help > "$work/out" 2>&1 \
    && grep -q "revoke" "$work/out" && ok "wxpay --help under Lua 5.1" || nok "wxpay --help under Lua 5.1" "$work/out"
in_tree 5.4 "$work/t54" "$work/t54/bin/wxpay" --version > "$work/out" 2>&1 \
    && grep -q "Lua 5.4" "$work/out" && ok "wxpay --version under Lua 5.4" || nok "wxpay --version under Lua 5.4" "$work/out"

sandbox/ctl start "$sb" > /dev/null 2> "$work/ctl" || { cat "$work/ctl"; echo "luarocks: $passed passed, $((failed + 1)) failed"; exit 1; }
control=$(sed -n 's/^ *"control_url": *"\([^"]*\)".*/\1/p' "$sb/sandbox.json")
seed() { curl -s -f -m 10 -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "{\"out_trade_no\":\"$1\",\"trade_state\":\"SUCCESS\"}" "$control/orders"; }
state() { curl -s -m 10 "$control/orders/$1" | sed -n 's/.*"trade_state": *"\([A-Z]*\)".*/\1/p'; }

for v in 5.1 5.4; do
    t=$work/t$(echo $v | tr -d .); no="ROCK$(echo $v | tr -d .)$$"
    seed "$no"
    in_tree $v "$t" "$t/bin/wxpay" --config "$sb/client.json" revoke --out-trade-no "$no" > "$work/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(state "$no")" = REVOKED ]; then ok "wxpay revoke under Lua $v (installed tree)"
    else echo "exit $rc, sandbox state $(state "$no")" >> "$work/out"; nok "wxpay revoke under Lua $v" "$work/out"; fi
done

no="LIB51$$"; seed "$no"
in_tree 5.1 "$work/t51" lua5.1 -e "
  local wxpay = require 'wxpay'
  local c = assert(wxpay.new('$sb/client.json'))
  local ok, err = c:revoke{ out_trade_no = '$no' }
  assert(ok == true, tostring(err))
  local o = assert(c:query{ out_trade_no = '$no' })
  assert(o.trade_state == 'REVOKED', o.trade_state)
  print('revoked under ' .. _VERSION)" > "$work/out" 2>&1 \
    && [ "$(state "$no")" = REVOKED ] && ok "the library revokes under plain lua5.1" || nok "the library revokes under plain lua5.1" "$work/out"

# an unbuilt checkout (the clone has no build/): "run make", exit 2
( cd "$src" && lua5.4 bin/wxpay --help ) > "$work/out" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q 'run `make`' "$work/out" && [ "$(wc -l < "$work/out")" -le 2 ]; then
    ok "bin/wxpay in an unbuilt checkout: run make first, exit 2"
else echo "exit $rc" >> "$work/out"; nok "bin/wxpay in an unbuilt checkout" "$work/out"; fi

echo "luarocks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
