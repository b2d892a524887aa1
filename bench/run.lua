--- make bench: the driver. Runs every step against the sandbox that bench/run
-- started in DIR, prints a table and writes bench/results.json.
--   lua5.4 bench/run.lua SANDBOX_DIR          (from the repository root)
-- Steps (docs/bench.md): sign, e2e, peers, cold, memory, batch, clients, analysis.
local B = require "bench.lib"
local json = B.json

local DIR = assert(arg[1], "usage: lua5.4 bench/run.lua SANDBOX_DIR")
local N = tonumber(os.getenv("BENCH_N") or "") or 2000
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "") or 3
local SIGN_SECONDS = 3
local SKIP = {}
for w in (os.getenv("BENCH_SKIP") or ""):gmatch("%S+") do SKIP[w] = true end

local ENV54 = "LUA_PATH='./?.lua;./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./build/5.4/?.so;;'"
local ENVJIT = "LUA_PATH='./?.lua;./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./build/luajit/?.so;;'"
local q, sh = B.q, B.sh

local cfg = json.decode((assert(B.read(DIR .. "/sandbox.json"), "no sandbox.json in " .. DIR)))
local results = { n = N, rounds = ROUNDS, steps = {}, notes = {} }
local R = results.steps

local function log(fmt, ...)
  io.stderr:write(("bench: " .. fmt .. "\n"):format(...))
end

local function have(cmd)
  local _, ok = sh("command -v " .. cmd .. " >/dev/null 2>&1")
  return ok
end

--- Runs a worker; returns its last JSON line decoded, or nil, reason.
local function worker(cmd)
  local out, ok, code = sh(cmd .. " 2>" .. q(DIR .. "/worker.err"))
  local last
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then last = line end
  end
  local decoded = last and select(2, pcall(json.decode, last))
  if type(decoded) == "table" then return decoded end
  local err = B.read(DIR .. "/worker.err") or ""
  return nil, ("exit %s: %s %s"):format(tostring(code), out:sub(-300), err:sub(-500)), ok
end

local function stats() return select(2, B.control(cfg, "GET", "/stats")) end

local function seed(order)
  local st, o = B.control(cfg, "POST", "/orders", { out_trade_no = order, mchid = cfg.mchid })
  assert(st == 200, "seeding " .. order .. " failed: " .. tostring(st) .. " " .. json.encode(o))
end

local function sandbox_cpu_s()
  local stat = B.read(("/proc/%d/stat"):format(math.floor(tonumber(cfg.pid) or 0))) or ""
  local rest = stat:match("^%d+ %b() (.*)$") or ""
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / 100
end

local function cpu_jiffies()
  local line = (B.read("/proc/stat") or ""):match("^cpu%s+([^\n]+)") or ""
  local v = {}
  for w in line:gmatch("%d+") do v[#v + 1] = tonumber(w) end
  local total = 0
  for _, x in ipairs(v) do total = total + x end
  return total - (v[4] or 0) - (v[5] or 0), total   -- busy (not idle/iowait), total
end

local function f1(x) return x and ("%.1f"):format(x) or "-" end
local function f2(x) return x and ("%.2f"):format(x) or "-" end
local function f3(x) return x and ("%.3f"):format(x) or "-" end

-------------------------------------------------------------------------------
-- Machine
-------------------------------------------------------------------------------

local machine = {
  nproc = tonumber((sh("nproc"))),
  cpu = (sh("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1"):gsub("%s+$", "")),
  loadavg_start = (B.read("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)"),
  openssl = (sh("openssl version"):gsub("%s+$", "")),
  lua = (sh("lua5.4 -v 2>&1"):gsub("%s+$", "")),
  luajit = (sh("luajit -v 2>&1"):gsub("%s+$", "")),
  clk_tck = tonumber((sh("getconf CLK_TCK"))),
  date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
}
results.machine = machine
if machine.clk_tck ~= 100 then
  results.notes[#results.notes + 1] = "CLK_TCK is not 100: the /proc user/sys splits are off (os.clock figures are not)"
end
local busy0, total0 = cpu_jiffies()
local bench_t0 = os.time()
log("nproc=%s, load average %s, N=%d, rounds=%d", tostring(machine.nproc), tostring(machine.loadavg_start), N, ROUNDS)

for _, so in ipairs { "build/5.4/wxpay/core.so", "build/luajit/wxpay/core.so" } do
  assert(B.read(so), so .. " is missing: run `make build` (make bench does)")
end

-------------------------------------------------------------------------------
-- 1. Signing
-------------------------------------------------------------------------------

local function parse_openssl(out)
  local s_sign, s_ver, sign, verify = out:match("rsa%s+2048 bits%s+([%d.]+)s%s+([%d.]+)s%s+([%d.]+)%s+([%d.]+)")
  if not sign then return nil end
  return { sign_per_s = tonumber(sign), verify_per_s = tonumber(verify),
    sign_s = tonumber(s_sign), verify_s = tonumber(s_ver) }
end

local function step_sign()
  local key = cfg.private_key
  local floor_bin = DIR .. "/sign_floor"
  local _, built = sh(("cc -O2 -o %s bench/c/sign_floor.c -lcrypto"):format(q(floor_bin)))
  local r = { rounds = {}, openssl_cmd = "taskset -c 0 openssl speed -seconds 3 rsa2048" }
  local best = {}
  local function keep(name, v)
    if v and (not best[name] or v > best[name]) then best[name] = v end
  end
  local best_verify
  for round = 1, ROUNDS do
    local row = {}
    log("sign: round %d/%d (openssl speed 6 s, Lua 5.4 %d s, LuaJIT %d s)", round, ROUNDS, SIGN_SECONDS, SIGN_SECONDS)
    local o = parse_openssl((sh("taskset -c 0 openssl speed -seconds 3 rsa2048 2>/dev/null")))
    row.openssl = o
    if o then
      keep("openssl", o.sign_per_s)
      if not best_verify or o.verify_per_s > best_verify then best_verify = o.verify_per_s end
    end
    row.lua54 = worker(("%s taskset -c 0 lua5.4 bench/sign.lua %s %d"):format(ENV54, q(key), SIGN_SECONDS))
    row.luajit = worker(("%s taskset -c 0 luajit bench/sign.lua %s %d"):format(ENVJIT, q(key), SIGN_SECONDS))
    keep("lua54", row.lua54 and row.lua54.per_user_s)
    keep("luajit", row.luajit and row.luajit.per_user_s)
    keep("lua54_wall", row.lua54 and row.lua54.per_wall_s)
    keep("luajit_wall", row.luajit and row.luajit.per_wall_s)
    if built then
      row.c = worker(("taskset -c 0 %s %s 2"):format(q(floor_bin), q(key)))
      keep("c_pkey_sign", row.c and row.c.pkey_sign_per_user_s)
      keep("c_digest_sign", row.c and row.c.digest_sign_per_user_s)
    end
    r.rounds[round] = row
  end
  assert(best.openssl, "could not parse `openssl speed` output")
  r.best = best
  r.openssl_sign_per_s = best.openssl
  r.openssl_verify_per_s = best_verify
  -- per-round ratios (neighbours in time, so slow drifts of the machine's load cancel)
  for _, k in ipairs { "lua54", "luajit" } do
    local list = {}
    for _, row in ipairs(r.rounds) do
      if row.openssl and row[k] then list[#list + 1] = row[k].per_user_s / row.openssl.sign_per_s end
    end
    r["round_ratios_" .. k] = list
    r["median_round_ratio_" .. k] = B.median(list)
  end
  r.ratio_lua54 = best.lua54 and best.lua54 / best.openssl
  r.ratio_luajit = best.luajit and best.luajit / best.openssl
  r.floor_ms = 1000 / best.openssl + 1000 / best_verify
  return r
end

-------------------------------------------------------------------------------
-- 2. End to end (and 5. memory)
-------------------------------------------------------------------------------

local function e2e_run(env, interp, n, tag)
  local order = ("BE%s%d"):format(tag, os.time() % 100000000)
  seed(order)
  local before, sb0 = stats(), sandbox_cpu_s()
  local res, err = worker(("%s %s bench/e2e.lua %s %d %s"):format(env, interp, q(DIR .. "/sandbox.json"), n, order))
  local after, sb1 = stats(), sandbox_cpu_s()
  if not res then return nil, err end
  res.handshakes = after.handshakes - before.handshakes
  res.connections = after.connections - before.connections
  res.requests = after.requests - before.requests
  res.rejected = after.rejected - before.rejected
  res.sandbox_cpu_ms_per_call = (sb1 - sb0) * 1000 / (res.requests > 0 and res.requests or 1)
  return res
end

-- The RSA floor when step 1 did not run: one RSA-2048 sign + one verify, from
-- `openssl speed` on core 0 (best of two), in this same run.
local function quick_floor_ms()
  local best
  for _ = 1, 2 do
    local o = parse_openssl((sh("taskset -c 0 openssl speed -seconds 2 rsa2048 2>/dev/null")))
    if o then
      local f = 1000 / o.sign_per_s + 1000 / o.verify_per_s
      if not best or f < best then best = f end
    end
  end
  return best
end

-- Syscalls per revoke: `strace -c -f` over the e2e worker with N1 and with N2
-- calls; the difference divided by N2 - N1 leaves set-up and warm-up out.
local SYS_N1, SYS_N2 = 50, 550

local function strace_counts(env, interp, n, tag)
  local order = ("BS%s%d_%d"):format(tag, n, os.time() % 100000000)
  seed(order)
  local file = DIR .. "/strace." .. tag .. n
  local res, err = worker(("%s strace -c -f -o %s %s bench/e2e.lua %s %d %s"):format(env, q(file), interp,
    q(DIR .. "/sandbox.json"), n, order))
  if not res then return nil, err end
  local counts, total = {}, nil
  for line in (B.read(file) or ""):gmatch("[^\n]+") do
    -- % time  seconds  usecs/call  calls  [errors]  syscall
    local calls, name = line:match("^%s*[%d.]+%s+[%d.]+%s+%d+%s+(%d+)%s+%d*%s*(%S+)%s*$")
    if calls then
      if name == "total" then total = tonumber(calls) else counts[name] = tonumber(calls) end
    end
  end
  if not total then return nil, "no strace -c table in " .. file end
  return { total = total, counts = counts }
end

local function ensure_strace()
  if have("strace") then return true end
  log("e2e: strace missing: apt-get install strace")
  sh("export DEBIAN_FRONTEND=noninteractive; (apt-get install -y -qq strace "
    .. "|| (apt-get update -qq && apt-get install -y -qq strace)) >/dev/null 2>&1")
  return have("strace")
end

local function syscalls_per_call(env, interp, tag)
  if not ensure_strace() then return nil, "strace is not available" end
  local a, err = strace_counts(env, interp, SYS_N1, tag)
  if not a then return nil, err end
  local b, err2 = strace_counts(env, interp, SYS_N2, tag)
  if not b then return nil, err2 end
  local per, top = (b.total - a.total) / (SYS_N2 - SYS_N1), {}
  for name, c in pairs(b.counts) do
    local d = (c - (a.counts[name] or 0)) / (SYS_N2 - SYS_N1)
    if d >= 0.05 then top[#top + 1] = { name = name, per_call = d } end
  end
  table.sort(top, function(x, y) return x.per_call > y.per_call end)
  return { per_call = per, by_syscall = top, loops = { SYS_N1, SYS_N2 } }
end

local function step_e2e()
  local r = {}
  log("e2e: %d sequential revokes, Lua 5.4", N)
  r.lua54 = assert(e2e_run(ENV54, "lua5.4", N, "A"))
  log("e2e: %d sequential revokes, LuaJIT", N)
  r.luajit = e2e_run(ENVJIT, "luajit", N, "J")
  local floor = R.sign and R.sign.floor_ms
  if not floor then
    log("e2e: the RSA floor (step 1 skipped): openssl speed rsa2048, 2 x 2 s")
    floor = quick_floor_ms()
    r.floor_source = "openssl speed -seconds 2 rsa2048, best of 2 (step 1 skipped)"
  else
    r.floor_source = "step 1: openssl speed -seconds 3 rsa2048, best of " .. ROUNDS
  end
  log("e2e: syscalls per revoke (strace -c -f, loops of %d and %d)", SYS_N1, SYS_N2)
  r.syscalls_lua54, r.syscalls_error = syscalls_per_call(ENV54, "lua5.4", "A")
  if floor then
    r.floor_ms = floor
    r.ratio_lua54 = r.lua54.cpu_ms_per_call / floor
    r.ratio_luajit = r.luajit and r.luajit.cpu_ms_per_call / floor
  end
  -- a bare interpreter's peak RSS, for scale
  local hwm = [[io.write(io.open("/proc/self/status"):read("a"):match("VmHWM:%s+(%d+)"))]]
  r.bare_lua54_hwm_kb = tonumber((sh("lua5.4 -e " .. q(hwm))))
  -- ... and one that only loaded the module (core.so, libcurl, OpenSSL and their dependencies)
  r.loaded_lua54_hwm_kb = tonumber((sh(ENV54 .. " lua5.4 -e " .. q('require "wxpay"; ' .. hwm))))
  return r
end

-------------------------------------------------------------------------------
-- 3. Peers
-------------------------------------------------------------------------------

local PEERS = { "wechatpay-axios-plugin", "wechatpay-node-v3" }

local function ensure_node()
  if have("node") and have("npm") then return true end
  log("peers: node/npm missing: installing Debian's nodejs and npm")
  local out, ok = sh("export DEBIAN_FRONTEND=noninteractive; (apt-get install -y -qq nodejs npm "
    .. "|| (apt-get update -qq && apt-get install -y -qq nodejs npm)) 2>&1 | tail -n 3")
  if not ok or not (have("node") and have("npm")) then return nil, "could not install nodejs/npm: " .. out end
  return true
end

local function ensure_peers()
  local missing = {}
  for _, p in ipairs(PEERS) do
    if not B.read("bench/peers/node_modules/" .. p .. "/package.json") then missing[#missing + 1] = p end
  end
  if #missing == 0 then return true end
  log("peers: npm install --prefix bench/peers %s", table.concat(missing, " "))
  local out, ok = sh("mkdir -p bench/peers && npm install --prefix bench/peers --no-audit --no-fund "
    .. table.concat(missing, " ") .. " 2>&1 | tail -n 5")
  if not ok then return nil, "npm install failed: " .. out end
  for _, p in ipairs(missing) do
    if not B.read("bench/peers/node_modules/" .. p .. "/package.json") then
      return nil, "npm install did not bring " .. p .. ": " .. out
    end
  end
  return true
end

local function peer_run(script, n, extra_env)
  local before, sb0 = stats(), sandbox_cpu_s()
  local res, err = worker(("%sNODE_EXTRA_CA_CERTS=%s node %s %s %d"):format(extra_env or "",
    q(cfg.ca_file), q(script), q(DIR .. "/sandbox.json"), n))
  local after, sb1 = stats(), sandbox_cpu_s()
  if not res then return { ok = false, error = err } end
  res.sandbox_cpu_ms_per_call = (sb1 - sb0) * 1000 / math.max(1, after.requests - before.requests)
  return res
end

local function step_peers()
  local r = { node = nil, peers = {} }
  local ok, err = ensure_node()
  if ok then ok, err = ensure_peers() end
  if not ok then r.error = err return r end
  r.node = (sh("node --version"):gsub("%s+$", ""))
  for _, p in ipairs(PEERS) do
    local pj = json.decode(B.read("bench/peers/node_modules/" .. p .. "/package.json"))
    r.peers[p] = { version = pj.version }
  end
  log("peers: wechatpay-axios-plugin, %d revokes", N)
  local a = peer_run("bench/node/axios_plugin.js", N)
  a.version = r.peers["wechatpay-axios-plugin"].version
  r.peers["wechatpay-axios-plugin"] = a
  log("peers: wechatpay-node-v3, %d revokes", N)
  local v = peer_run("bench/node/node_v3.js", N)
  v.version = r.peers["wechatpay-node-v3"].version
  r.peers["wechatpay-node-v3"] = v
  local nd = math.max(100, math.floor(N / 10))
  log("peers: wechatpay-node-v3 with its default HTTP agent, %d revokes", nd)
  local d = peer_run("bench/node/node_v3.js", nd, "BENCH_NODEV3_AGENT=default ")
  d.version = v.version
  r.node_v3_default_agent = d
  local best
  for name, p in pairs(r.peers) do
    if p.ok and (not best or p.cpu_ms_per_call < r.peers[best].cpu_ms_per_call) then best = name end
  end
  r.best_peer = best
  local ours = R.e2e and R.e2e.lua54
  if best and ours then
    r.cpu_ratio_vs_best = ours.cpu_ms_per_call / r.peers[best].cpu_ms_per_call
    for _, p in pairs(r.peers) do
      if p.ok then
        p.our_cpu_ratio = ours.cpu_ms_per_call / p.cpu_ms_per_call
        p.our_speedup = ours.calls_per_s / p.calls_per_s
      end
    end
  end
  return r
end

-------------------------------------------------------------------------------
-- 4. Cold start
-------------------------------------------------------------------------------

local function step_cold()
  local r = {}
  local order = ("BC%d"):format(os.time() % 100000000)
  seed(order)
  local conf = DIR .. "/wxpay.json"
  B.write(conf, json.encode {
    mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
    platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file,
  })
  -- the same revoke, signed here once for the curl baseline (valid for 300 s)
  local core = require "wxpay.core"
  local key = assert(core.load_private_key(assert(B.read(cfg.private_key))))
  local target = "/v3/global/micropay/transactions/out-trade-no/" .. order .. "/reverse"
  local body = '{"mchid":"' .. cfg.mchid .. '"}'
  local auth = assert(key:authorization(cfg.mchid, cfg.serial_no, "POST", target, body))
  key:close()
  local curl = ("curl -s -o /dev/null --fail --cacert %s -H %s -H %s -H %s -H %s --data %s %s"):format(
    q(cfg.ca_file), q("Authorization: " .. auth), q("Accept: application/json"),
    q("Content-Type: application/json"), q("User-Agent: wxpay-bench-curl"), q(body), q(cfg.base_url .. target))
  local lua_cmd = ("lua5.4 bench/cold.lua %s %s"):format(q(conf), q(order))
  local bare = "lua5.4 -e ''"

  local _, ok = sh(curl)
  if not ok then error("the curl baseline request failed (not a 2xx)") end
  local _, lok = sh(ENV54 .. " " .. lua_cmd)
  if not lok then error("the cold-start script failed: " .. (sh(ENV54 .. " " .. lua_cmd .. " 2>&1"))) end

  if not have("hyperfine") then
    log("cold: hyperfine missing: apt-get install hyperfine")
    sh("export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq hyperfine >/dev/null 2>&1 "
      .. "|| (apt-get update -qq && apt-get install -y -qq hyperfine) >/dev/null 2>&1")
  end
  local runs = 20
  if have("hyperfine") then
    r.tool = "hyperfine -N --warmup 3 --runs 20 (median)"
    local out_json = DIR .. "/hyperfine.json"
    log("cold: hyperfine, %d runs each of lua5.4 cold start, curl baseline, bare lua5.4", runs)
    local out, hok = sh(("%s hyperfine -N --style none --warmup 3 --runs %d --export-json %s %s %s %s 2>&1")
      :format(ENV54, runs, q(out_json), q(lua_cmd), q(curl), q(bare)))
    if not hok then error("hyperfine failed: " .. out:sub(-400)) end
    local hf = json.decode(B.read(out_json))
    local function pick(i)
      local x = hf.results[i]
      return { median_ms = x.median * 1000, mean_ms = x.mean * 1000, stddev_ms = x.stddev * 1000,
        min_ms = x.min * 1000, user_ms = x.user * 1000, system_ms = x.system * 1000 }
    end
    r.lua, r.curl, r.bare_lua = pick(1), pick(2), pick(3)
  else
    r.tool = "sh loop, 20 runs each (median; hyperfine unavailable)"
    local core2 = require "wxpay.core"
    local function time_it(cmd)
      local t = {}
      for i = 1, runs do
        local t0 = core2.monotonic_ms()
        sh(cmd .. " >/dev/null 2>&1")
        t[i] = core2.monotonic_ms() - t0
      end
      table.sort(t)
      return { median_ms = B.median(t), min_ms = t[1] }
    end
    r.lua, r.curl, r.bare_lua = time_it(ENV54 .. " " .. lua_cmd), time_it(curl), time_it(bare)
  end
  -- the sandbox's own share, as curl sees it: the TLS handshake (server side
  -- mostly) and the wait between sending the request and the first byte
  local own, hs, srv = {}, {}, {}
  for _ = 1, runs do
    local out = sh(curl .. " -w '%{time_connect} %{time_appconnect} %{time_pretransfer} %{time_starttransfer}'")
    local c, a, p, s = out:match("([%d.]+) ([%d.]+) ([%d.]+) ([%d.]+)")
    if c then
      hs[#hs + 1] = (tonumber(a) - tonumber(c)) * 1000
      srv[#srv + 1] = (tonumber(s) - tonumber(p)) * 1000
      own[#own + 1] = hs[#hs] + srv[#srv]
    end
  end
  r.sandbox_handshake_ms = B.median(hs)
  r.sandbox_first_request_ms = B.median(srv)
  r.sandbox_own_ms = B.median(own)
  -- where our process spends it (in-process timers, median of 7)
  local ph = {}
  for i = 1, 7 do ph[i] = worker(ENV54 .. " " .. lua_cmd .. " phases") end
  local phases = {}
  for _, k in ipairs { "startup_cpu_ms", "require_lua_ms", "new_ms", "first_revoke_ms", "total_cpu_ms" } do
    local v = {}
    for _, p in ipairs(ph) do if p then v[#v + 1] = p[k] end end
    phases[k] = B.median(v)
  end
  r.phases = phases
  r.beyond_curl_ms = r.lua.median_ms - r.curl.median_ms
  r.beyond_sandbox_ms = r.lua.median_ms - r.sandbox_own_ms
  return r
end

-------------------------------------------------------------------------------
-- 6. Batch
-------------------------------------------------------------------------------

local function batch_available()
  local wxpay = require "wxpay"
  local c = wxpay.new { mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
    platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file }
  local ok = c and c.revoke_many ~= nil
  if c then c:close() end
  return ok
end

local function step_batch()
  local r = {}
  if not batch_available() then
    r.available = false
    return r
  end
  r.available = true
  for _, conc in ipairs { 1, 16 } do
    local prefix = ("BB%dx%d_"):format(conc, os.time() % 1000000)
    log("batch: seeding %d paid orders", N)
    local out, ok = sh(("/usr/bin/python3 bench/seed.py %s %s %d %s"):format(q(cfg.control_url), q(prefix), N,
      q(cfg.mchid)))
    if not ok then error("seeding the batch orders failed: " .. out) end
    log("batch: revoke_many(%d orders, {concurrency = %d})", N, conc)
    local before, sb0 = stats(), sandbox_cpu_s()
    local res, err = worker(("%s lua5.4 bench/batch.lua %s %s %d %d"):format(ENV54, q(DIR .. "/sandbox.json"),
      q(prefix), N, conc))
    local after, sb1 = stats(), sandbox_cpu_s()
    if not res then res = { error = err } end
    res.handshakes = after.handshakes - before.handshakes
    res.refunds = after.refunds - before.refunds
    res.requests = after.requests - before.requests
    res.sandbox_cpu_ms_per_call = (sb1 - sb0) * 1000 / math.max(1, res.requests)
    r["c" .. conc] = res
  end
  return r
end

-------------------------------------------------------------------------------
-- 7. Many clients in one process
-------------------------------------------------------------------------------

local CLIENTS = tonumber(os.getenv("BENCH_CLIENTS") or "") or 1000

local function step_clients()
  local r = {}
  for _, k in ipairs { { "lua54", ENV54, "lua5.4" }, { "luajit", ENVJIT, "luajit" } } do
    local order = ("BM%s%d"):format(k[1], os.time() % 100000000)
    seed(order)
    log("clients: %d clients (wxpay.new + one revoke each) in one %s process", CLIENTS, k[3])
    local before = stats()
    local res, err = worker(("%s %s bench/clients.lua %s %d %s"):format(k[2], k[3], q(DIR .. "/sandbox.json"),
      CLIENTS, order))
    local after = stats()
    if not res then res = { error = err } end
    res.handshakes = after.handshakes - before.handshakes
    res.connections = after.connections - before.connections
    res.requests = after.requests - before.requests
    r[k[1]] = res
  end
  -- what one client is made of (a separate process, fresh heap)
  local order = ("BMS%d"):format(os.time() % 100000000)
  seed(order)
  r.split = worker(("BENCH_CLIENTS_SPLIT=1 %s lua5.4 bench/clients.lua %s 1 %s"):format(ENV54,
    q(DIR .. "/sandbox.json"), order))
  return r
end

-------------------------------------------------------------------------------
-- Analysis of misses: perf (or nothing)
-------------------------------------------------------------------------------

local function perf_ok()
  local _, ok = sh("perf stat -e task-clock true >/dev/null 2>&1")
  return ok
end

-- Control FIFOs so that perf counts only what the worker brackets with
-- "enable"/"disable" (bench/e2e.lua); returns the perf options and the env.
local function perf_fifos(name)
  local ctl, ack = DIR .. "/" .. name .. ".ctl", DIR .. "/" .. name .. ".ack"
  os.remove(ctl)
  os.remove(ack)
  sh(("mkfifo %s %s"):format(q(ctl), q(ack)))
  return ("-D -1 --control fifo:%s,%s"):format(q(ctl), q(ack)), ("BENCH_PERF_CTL=%s"):format(q(ctl .. "," .. ack))
end

-- Self share per DSO, and inclusive share for chosen symbols.
-- `cmd` is run under env; with `bracketed`, only the worker's enabled window counts.
local function perf_profile(cmd, data, symbols, bracketed, freq)
  local opts, env = "", ""
  if bracketed then opts, env = perf_fifos("perf-record") end
  -- (32 KiB of stack per sample: with 16 KiB the unwinder loses the frames above libcurl's poll/send)
  local _, ok = sh(("perf record -q %s -o %s -F %d --call-graph dwarf,32768 -- env %s %s >/dev/null 2>&1")
    :format(opts, q(data), freq or 999, env, cmd))
  if not ok then return nil, "perf record failed" end
  local p = { dso = {}, inclusive = {} }
  local out = sh(("perf report -i %s --stdio --no-children --sort dso -g none 2>/dev/null"):format(q(data)))
  for pct, dso in out:gmatch("\n%s+([%d.]+)%%%s+(%S+)") do
    if #p.dso < 8 then p.dso[#p.dso + 1] = { dso = dso, pct = tonumber(pct) } end
  end
  out = sh(("perf report -i %s --stdio --children --sort sym -g none 2>/dev/null"):format(q(data)))
  local want = {}
  for _, s in ipairs(symbols) do want[s] = true end
  for children, self, sym in out:gmatch("\n%s+([%d.]+)%%%s+([%d.]+)%%%s+%[[.k]%]%s+(%S+)") do
    if want[sym] and not p.inclusive[sym] then
      p.inclusive[sym] = { children = tonumber(children), self = tonumber(self) }
    end
  end
  os.remove(data)
  os.remove(data .. ".old")
  return p
end

local function step_analysis()
  local r = {}
  if not perf_ok() then
    r.error = "perf is not usable here: no profile (valgrind --tool=callgrind would be the fallback)"
    return r
  end
  r.tool = "perf record --call-graph dwarf,32768 (sign loop 999 Hz, e2e loop 2999 Hz)"
  log("analysis: perf profile of the signing loop (Lua 5.4, 2 s)")
  r.sign = perf_profile(("%s lua5.4 bench/sign.lua %s 2"):format(ENV54, q(cfg.private_key)),
    DIR .. "/perf-sign.data",
    { "l_priv_authorization", "wx_key_sign_parts_b64", "RSA_sign", "BN_mod_exp_mont_consttime_x2", "BN_BLINDING_update",
      "EVP_DigestSignInit", "wx_nonce", "wx_b64_encode", "luaV_execute" })
  local n = math.min(N, 1500)
  local order = ("BP%d"):format(os.time() % 100000000)
  seed(order)
  log("analysis: perf profile of %d end-to-end revokes (Lua 5.4, the loop only)", n)
  r.e2e_n = n
  local e2e_cmd = ("%s lua5.4 bench/e2e.lua %s %d %s"):format(ENV54, q(DIR .. "/sandbox.json"), n, order)
  r.e2e = perf_profile(e2e_cmd, DIR .. "/perf-e2e.data",
    { "l_priv_authorization", "RSA_sign", "l_pub_verify_response", "wx_key_verify_parts_b64", "l_session_request",
      "wx_session_perform", "curl_easy_perform", "SSL_write", "SSL_read", "ssl3_write_bytes", "__poll",
      "__send", "__recv", "luaV_execute", "luaH_resize", "luaC_step", "lua_pcallk", "curl_multi_poll",
      "EVP_DigestVerifyInit", "RSA_verify", "do_syscall_64", "curl_multi_perform", "wx_nonce" }, true, 2999)
  local opts, env = perf_fifos("perf-stat")
  local out = sh(("perf stat %s -x, -e task-clock,context-switches,cpu-migrations,page-faults -- env %s %s "
    .. "2>&1 >/dev/null"):format(opts, env, e2e_cmd))
  r.e2e_perf_stat = {}
  for v, ev in out:gmatch("([%d.]+),[^,]*,([%a%-]+)") do r.e2e_perf_stat[ev] = tonumber(v) end
  return r
end

-------------------------------------------------------------------------------
-- Run the steps
-------------------------------------------------------------------------------

local STEPS = {
  { "sign", step_sign }, { "e2e", step_e2e }, { "peers", step_peers },
  { "cold", step_cold }, { "batch", step_batch }, { "clients", step_clients }, { "analysis", step_analysis },
}
for _, s in ipairs(STEPS) do
  local name, fn = s[1], s[2]
  if SKIP[name] then
    R[name] = { skipped = true }
  else
    local ok, res = pcall(fn)
    if ok then R[name] = res else
      R[name] = { error = tostring(res) }
      log("%s failed: %s", name, tostring(res))
    end
  end
end

local busy1, total1 = cpu_jiffies()
machine.loadavg_end = (B.read("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")
machine.busy_cores_avg = (busy1 - busy0) / math.max(1, total1 - total0) * (machine.nproc or 1)
machine.bench_seconds = os.time() - bench_t0

-------------------------------------------------------------------------------
-- The table
-------------------------------------------------------------------------------

local rows = {}
local function row(step, metric, value, target, status)
  rows[#rows + 1] = { step = step, metric = metric, value = value, target = target or "", status = status or "" }
end
local function verdict(met, miss_text)
  if met == nil then return "n/a" end
  return met and "MET" or ("MISSED " .. (miss_text or ""))
end

local S = R.sign
if S and S.best then
  row("1 sign", "openssl speed rsa2048 sign/s, verify/s (best of " .. ROUNDS .. ", core 0)",
    f1(S.openssl_sign_per_s) .. " / " .. f1(S.openssl_verify_per_s))
  for _, k in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local rate, ratio = S.best[k[1]], S["ratio_" .. k[1]]
    if rate then
      row("1 sign", ("key:authorization/s, %s (per user-CPU s; wall %s)"):format(k[2], f1(S.best[k[1] .. "_wall"])),
        ("%s  ratio %s"):format(f1(rate), f3(ratio)), ">= 0.97",
        verdict(ratio >= 0.97, ("by %.1f%%"):format((0.97 - ratio) * 100)))
    end
  end
  local rr = {}
  for _, x in ipairs(S.round_ratios_lua54 or {}) do rr[#rr + 1] = f3(x) end
  local rj = {}
  for _, x in ipairs(S.round_ratios_luajit or {}) do rj[#rj + 1] = f3(x) end
  row("1 sign", "per-round ratios (same minute): Lua 5.4 | LuaJIT",
    table.concat(rr, " ") .. " | " .. table.concat(rj, " "))
  if S.best.c_pkey_sign then
    row("1 sign", "C diag: EVP_PKEY_sign reused ctx / EVP_DigestSign fresh ctx, per s",
      f1(S.best.c_pkey_sign) .. " / " .. f1(S.best.c_digest_sign))
  end
elseif S then
  row("1 sign", "error", S.error or "skipped")
end

local E = R.e2e
if E and E.lua54 then
  for _, k in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local e = E[k[1]]
    if e then
      row("2 e2e", k[2] .. ": calls/s, p50 / p99 ms",
        ("%s  %s / %s"):format(f1(e.calls_per_s), f2(e.p50_ms), f2(e.p99_ms)))
      row("2 e2e", k[2] .. ": client CPU ms/call (user+sys), handshakes",
        ("%s  (%s+%s)  hs=%d"):format(f3(e.cpu_ms_per_call), f3(e.user_ms_per_call), f3(e.sys_ms_per_call),
          e.handshakes or -1))
      local ratio = E["ratio_" .. k[1]]
      if ratio then
        row("2 e2e", k[2] .. ": CPU/call vs RSA floor " .. f3(E.floor_ms) .. " ms", f2(ratio), "<= 1.30",
          verdict(ratio <= 1.30, ("by %.0f%% (%.3f ms/call over)"):format((ratio / 1.30 - 1) * 100,
            e.cpu_ms_per_call - 1.30 * E.floor_ms)))
      end
      if e.failures and e.failures > 0 then row("2 e2e", k[2] .. ": FAILURES", tostring(e.failures)) end
    end
  end
  row("2 e2e", "RSA floor (1 sign + 1 verify), same run", f3(E.floor_ms) .. " ms  " .. tostring(E.floor_source))
  local sc = E.syscalls_lua54
  if sc then
    local t = {}
    for i, x in ipairs(sc.by_syscall) do
      if i > 6 then break end
      t[#t + 1] = ("%s %.2f"):format(x.name, x.per_call)
    end
    row("2 e2e", ("Lua 5.4: syscalls per revoke (strace -c -f, loops %d/%d)"):format(sc.loops[1], sc.loops[2]),
      ("%.2f: %s"):format(sc.per_call, table.concat(t, ", ")))
  else
    row("2 e2e", "syscalls per revoke", "not measured: " .. tostring(E.syscalls_error))
  end
  row("2 e2e", "sandbox CPU ms/call (Python, for scale)", f3(E.lua54.sandbox_cpu_ms_per_call))
elseif E then
  row("2 e2e", "error", E.error or "skipped")
end

local P = R.peers
if P and P.peers and next(P.peers) then
  for _, name in ipairs(PEERS) do
    local p = P.peers[name] or { error = "not run" }
    if p.ok then
      row("3 peers", ("%s %s: calls/s, CPU ms/call, hs"):format(name, p.version or "?"),
        ("%s  %s  hs=%d  verifies=%s"):format(f1(p.calls_per_s), f3(p.cpu_ms_per_call), p.handshakes or -1,
          tostring(p.rejects_forged)))
      row("3 peers", "  wxpay vs " .. name .. ": CPU ratio, speed-up",
        ("%s  x%s"):format(f3(p.our_cpu_ratio), f2(p.our_speedup)))
    else
      row("3 peers", name .. ": did not run", tostring(p.error))
    end
  end
  if P.cpu_ratio_vs_best then
    row("3 peers", "wxpay CPU/call / best peer's (" .. P.best_peer .. ")", f3(P.cpu_ratio_vs_best), "<= 0.5",
      verdict(P.cpu_ratio_vs_best <= 0.5, ("by %.0f%%"):format((P.cpu_ratio_vs_best / 0.5 - 1) * 100)))
  end
  local d = P.node_v3_default_agent
  if d and d.ok then
    row("3 peers", "wechatpay-node-v3, its default agent: CPU ms/call, hs",
      ("%s  hs=%d/%d calls"):format(f3(d.cpu_ms_per_call), d.handshakes or -1, (d.n or 0) + 1))
  end
elseif P then
  row("3 peers", "not run", tostring(P.error or "skipped"))
end

local C = R.cold
if C and C.lua then
  row("4 cold", "timing", C.tool)
  row("4 cold", "lua5.4: load, client from files, first revoke: median ms", f1(C.lua.median_ms))
  row("4 cold", "curl same signed revoke, median ms; bare lua5.4 -e ''",
    f1(C.curl.median_ms) .. "; " .. f1(C.bare_lua.median_ms))
  row("4 cold", "beyond curl baseline (lua - curl), ms", f1(C.beyond_curl_ms), "< 30",
    verdict(C.beyond_curl_ms < 30, ("by %.1f ms"):format(C.beyond_curl_ms - 30)))
  row("4 cold", ("beyond sandbox own time %s ms (handshake %s + first request %s)"):format(f1(C.sandbox_own_ms),
    f1(C.sandbox_handshake_ms), f1(C.sandbox_first_request_ms)), f1(C.beyond_sandbox_ms), "< 30",
    verdict(C.beyond_sandbox_ms < 30, ("by %.1f ms"):format(C.beyond_sandbox_ms - 30)))
  local ph = C.phases or {}
  row("4 cold", "phases ms: interp CPU / require / new / first revoke / total CPU",
    ("%s / %s / %s / %s / %s"):format(f1(ph.startup_cpu_ms), f1(ph.require_lua_ms), f1(ph.new_ms),
      f1(ph.first_revoke_ms), f1(ph.total_cpu_ms)))
elseif C then
  row("4 cold", "error", tostring(C.error or "skipped"))
end

if E and E.lua54 then
  for _, k in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local e = E[k[1]]
    if e and e.peak_rss_kb then
      local mib = e.peak_rss_kb / 1024
      row("5 memory", k[2] .. " step-2 peak RSS (VmHWM) MiB; private dirty MiB",
        ("%.2f; %.2f"):format(mib, (e.private_dirty_kb or 0) / 1024), "< 10 MiB",
        verdict(mib < 10, ("by %.2f MiB"):format(mib - 10)))
    end
  end
  local top = {}
  for i, m in ipairs(E.lua54.rss_by_mapping or {}) do
    if i > 6 then break end
    top[#top + 1] = ("%s %.1f"):format(m.name, m.kb / 1024)
  end
  row("5 memory", "largest resident mappings (MiB), Lua 5.4", table.concat(top, ", "))
  row("5 memory", "peak RSS MiB: bare lua5.4; after require \"wxpay\" only",
    f2((E.bare_lua54_hwm_kb or 0) / 1024) .. "; " .. f2((E.loaded_lua54_hwm_kb or 0) / 1024))
end

local BT = R.batch
if BT and BT.available == false then
  row("6 batch", "revoke_many: not available", "")
elseif BT and BT.c1 then
  for _, k in ipairs { "c1", "c16" } do
    local b = BT[k]
    if b.error then
      row("6 batch", k .. ": error", tostring(b.error))
    else
      row("6 batch", ("concurrency %d: calls/s, CPU ms/call, hs, ok/failed"):format(b.concurrency),
        ("%s  %s  hs=%d  %d/%d"):format(f1(b.calls_per_s), f3(b.cpu_ms_per_call), b.handshakes or -1,
          b.succeeded or 0, b.failed or 0))
      row("6 batch", ("concurrency %d: sandbox CPU ms/call, refunds"):format(b.concurrency),
        ("%s  %d"):format(f3(b.sandbox_cpu_ms_per_call), b.refunds or -1))
    end
  end
elseif BT then
  row("6 batch", "error", tostring(BT.error or "skipped"))
end

local CL = R.clients
if CL and (CL.lua54 or CL.luajit) then
  for _, k in ipairs { { "lua54", "Lua 5.4" }, { "luajit", "LuaJIT" } } do
    local c = CL[k[1]]
    if c and not c.error then
      row("7 clients", ("%s: %d clients, one revoke each: handshakes, connections"):format(k[2], c.n),
        ("%d, %d  (failures %d)"):format(c.handshakes, c.connections, c.failures or -1), "<= 2",
        verdict(c.handshakes <= 2, ("by %d"):format(c.handshakes - 2)))
      row("7 clients", k[2] .. ": RSS KB per client beyond the first; first client KB",
        ("%.1f; %d"):format(c.kb_per_client_beyond_first, c.first_client_kb), "<= 16",
        verdict(c.kb_per_client_beyond_first <= 16, ("by %.1f KB"):format(c.kb_per_client_beyond_first - 16)))
      row("7 clients", k[2] .. ": CPU ms per client (wxpay.new + revoke)", f3(c.cpu_ms_per_client))
    elseif c then
      row("7 clients", k[2] .. ": error", tostring(c.error))
    end
  end
  local sp = CL.split and CL.split.split_kb
  if sp then
    row("7 clients", "one client's C parts, KB: key parse / key first sign / certificate parse",
      ("%.1f / %.1f / %.1f"):format(sp.private_key_parse, sp.private_key_first_sign, sp.certificate_parse))
  end
elseif CL then
  row("7 clients", "error", tostring(CL.error or "skipped"))
end

local A = R.analysis
if A and A.e2e then
  local function dsos(p)
    local t = {}
    for i, d in ipairs(p.dso) do
      if i > 6 then break end
      t[#t + 1] = ("%s %.0f%%"):format(d.dso, d.pct)
    end
    return table.concat(t, ", ")
  end
  local function incl(p, names)
    local t = {}
    for _, s in ipairs(names) do
      local v = p.inclusive[s]
      if v then t[#t + 1] = ("%s %.0f%%"):format(s, v.children) end
    end
    return table.concat(t, ", ")
  end
  if A.sign then
    row("perf", "sign loop: self time by DSO", dsos(A.sign))
    row("perf", "sign loop: inclusive", incl(A.sign, { "l_priv_authorization", "RSA_sign", "BN_BLINDING_update",
      "EVP_DigestSignInit", "wx_nonce", "wx_b64_encode" }))
  end
  row("perf", "e2e: self time by DSO", dsos(A.e2e))
  row("perf", "e2e: inclusive", incl(A.e2e, { "l_priv_authorization", "RSA_sign", "l_pub_verify_response",
    "RSA_verify", "EVP_DigestVerifyInit", "l_session_request", "curl_easy_perform", "curl_multi_poll",
    "do_syscall_64", "SSL_write", "SSL_read", "luaV_execute" }))
  local cpu = E and E.lua54 and E.lua54.cpu_ms_per_call
  local inc = A.e2e.inclusive
  if cpu and inc.l_priv_authorization and inc.l_session_request and inc.l_pub_verify_response then
    local sg, ht, vf = inc.l_priv_authorization.children, inc.l_session_request.children,
      inc.l_pub_verify_response.children
    A.e2e_breakdown_ms = { sign = cpu * sg / 100, http_tls = cpu * ht / 100, verify = cpu * vf / 100,
      other = cpu * (100 - sg - ht - vf) / 100 }
    local bd = A.e2e_breakdown_ms
    row("perf", "e2e CPU ms/call split: sign / HTTP+TLS / verify / Lua+rest",
      ("%s / %s / %s / %s"):format(f3(bd.sign), f3(bd.http_tls), f3(bd.verify), f3(bd.other)))
  end
  local ps = A.e2e_perf_stat or {}
  if ps["context-switches"] then
    row("perf", ("e2e perf stat, loop of %d: task-clock ms/call, ctx sw/call"):format(A.e2e_n),
      ("%.3f, %.2f"):format((ps["task-clock"] or 0) / A.e2e_n, ps["context-switches"] / A.e2e_n))
  end
elseif A then
  row("perf", "analysis", tostring(A.error or "skipped"))
end

results.table = rows
results.machine.loadavg = ("%s at start, %s at end; %.2f of %d cores busy on average"):format(
  tostring(machine.loadavg_start), tostring(machine.loadavg_end), machine.busy_cores_avg, machine.nproc or 0)

local w1, w2, w3 = 8, 60, 40
local function line(a, b, c, d, e)
  local s = ("%-" .. w1 .. "s %-" .. w2 .. "s %-" .. w3 .. "s %-9s %s"):format(a, b, c, d, e)
  print((s:gsub("%s+$", "")))
end
print()
print(("wxpay bench: nproc=%s  N=%d  %s"):format(tostring(machine.nproc), N, machine.cpu))
print(("load: %s  (%d s)"):format(results.machine.loadavg, machine.bench_seconds))
print(("%s; %s; %s"):format(machine.openssl, machine.lua, machine.luajit))
line("step", "metric", "value", "target", "status")
line(("-"):rep(w1), ("-"):rep(w2), ("-"):rep(w3), ("-"):rep(9), ("-"):rep(6))
for _, r in ipairs(rows) do
  local v = tostring(r.value)
  if #v > w3 then
    line(r.step, r.metric, "", r.target, r.status)
    print(("  " .. v))
  else
    line(r.step, r.metric, v, r.target, r.status)
  end
end

B.write("bench/results.json", json.encode(results) .. "\n")
print()
print("written: bench/results.json")
