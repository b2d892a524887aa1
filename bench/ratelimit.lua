--- make bench, issue 17's batch target: 450 paid orders against a sandbox that
-- limits revokes to 150 a second (sliding window, 429 RATELIMIT_EXCEEDED
-- above it), revoked by one client:revoke_many call with its defaults
-- (pacing at rate = 150, concurrency 16, deadline_ms 60000).
--   lua5.4|luajit bench/ratelimit.lua SANDBOX_DIR [COUNT] [LIMIT]
-- Target: all revoked, at most 1 % of the requests rate-limited, wall time
-- within 1.5 x COUNT/LIMIT + 2 s (6.5 s for 450 at 150/s). Prints one line
-- per run and exits 1 when the target is missed.
local B = require "bench.lib"
local wxpay = require "wxpay"
local core = require "wxpay.core"

local dir = assert(arg[1], "usage: bench/ratelimit.lua SANDBOX_DIR [COUNT] [LIMIT]")
local count, limit = tonumber(arg[2] or "450"), tonumber(arg[3] or "150")
local cfg = B.json.decode(assert(B.read(dir .. "/sandbox.json")))
local interp = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION

local function control(method, path, body)
  local data = body and ("--data-binary %s -H 'Content-Type: application/json'"):format(B.q(B.json.encode(body))) or ""
  local out, ok = B.sh(("curl -s -m 10 -X %s %s %s"):format(method, data, B.q(cfg.control_url .. path)))
  assert(ok, "control request failed: " .. method .. " " .. path)
  return B.json.decode(out)
end

control("POST", "/reset")
local prefix = ("RL%d_"):format(os.time() % 1000000)
local out, ok = B.sh(("/usr/bin/python3 bench/seed.py %s %s %d %s"):format(B.q(cfg.control_url), B.q(prefix),
  count, B.q(cfg.mchid)))
assert(ok, "seeding failed: " .. out)
control("POST", "/ratelimit", { per_second = limit })

local client = assert(wxpay.new(cfg.client_config))
local list = {}
for i = 1, count do list[i] = { out_trade_no = prefix .. i } end

local before = control("GET", "/stats")
local u0, s0 = B.rusage()
local w0 = core.monotonic_ms()
local results = client:revoke_many(list)
local wall = (core.monotonic_ms() - w0) / 1000
local u1, s1 = B.rusage()
local after = control("GET", "/stats")
client:close()
control("POST", "/ratelimit", { per_second = 0 })

local good, first = 0, nil
for i = 1, count do
  if results[i] == true then good = good + 1 else first = first or tostring(results[i]) end
end
local sent = after.revokes - before.revokes
local limited = after.ratelimited - before.ratelimited
local pct = 100 * limited / math.max(1, sent)
local target = 1.5 * count / limit + 2
local met = good == count and pct <= 1 and wall <= target
print(("batch at the rate limit (%s): %d/%d revoked, %d of %d revoke requests rate-limited (%.2f %%), "
  .. "%.2f s wall (minimum %.1f s, target <= %.1f s), client CPU %.0f ms: %s")
  :format(interp, good, count, limited, sent, pct, wall, count / limit, target, (u1 - u0 + s1 - s0) * 1000,
    met and "target met" or "TARGET MISSED"))
if first then print("  first failed item: " .. first) end
B.write(dir .. "/ratelimit-" .. (rawget(_G, "jit") and "luajit" or "lua54") .. ".json", B.json.encode {
  interpreter = interp, n = count, limit = limit, revoked = good, requests = sent, ratelimited = limited,
  ratelimited_pct = pct, wall_s = wall, target_s = target, met = met })
os.exit(met and 0 or 1)
