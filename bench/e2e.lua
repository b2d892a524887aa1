--- Step 2 worker: N sequential revokes over one keep-alive connection.
--   lua5.4|luajit bench/e2e.lua SANDBOX_JSON N OUT_TRADE_NO
-- The order was seeded (paid) by the driver; the warm-up revoke makes it
-- REVOKED (and opens the connection: TLS handshake), the N measured revokes
-- answer 204 again. Set-up (module load, wxpay.new, warm-up) is excluded from
-- the CPU and wall figures. Prints one JSON line.
local B = require "bench.lib"
local wxpay = require "wxpay"
local core = require "wxpay.core"

local cfg = B.json.decode(assert(B.read(arg[1])))
local n = tonumber(arg[2] or "2000")
local order = assert(arg[3], "usage: e2e.lua SANDBOX_JSON N OUT_TRADE_NO")

local client = assert(wxpay.new {
  mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
  platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file,
  rate = false, -- per-call cost, not WeChat's 150/s pacing (bench/ratelimit.lua measures that)
})
local out = { interpreter = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION, n = n }

local ok, err = client:revoke { out_trade_no = order }
if not ok then
  out.error = "warm-up revoke failed: " .. tostring(err)
  B.emit(out)
  os.exit(1)
end

-- Under `perf record|stat -D -1 --control fifo:CTL,ACK` (bench/run.lua's
-- analysis) BENCH_PERF_CTL="CTL,ACK": the counters cover the loop only.
local perf_ctl = os.getenv("BENCH_PERF_CTL")
local function perf(cmd)
  if not perf_ctl then return end
  local ctl, ack = perf_ctl:match("^([^,]+),([^,]+)$")
  local f = assert(io.open(ctl, "w"))
  f:write(cmd, "\n")
  f:close()
  local a = io.open(ack, "r")
  if a then
    a:read("*l")
    a:close()
  end
end

local call = { out_trade_no = order }
local lat = {}
local failures, first_error = 0, nil
local monotonic, clock = core.monotonic_ms, os.clock
local rss_before = B.status_kb("VmRSS")
local u0, s0 = B.rusage()
perf("enable")
local c0, w0 = clock(), monotonic()
for i = 1, n do
  local t = monotonic()
  local r, e = client:revoke(call)
  lat[i] = monotonic() - t
  if not r then
    failures = failures + 1
    first_error = first_error or tostring(e)
  end
end
local c1, w1 = clock(), monotonic()
perf("disable")
local u1, s1 = B.rusage()
table.sort(lat)

-- proof of verification (not timed): a 204 with a tampered signature must fail
B.control(cfg, "POST", "/faults", { fault = "flip_signature", count = 1, apply = false })
local forged, ferr = client:revoke(call)
B.control(cfg, "DELETE", "/faults")
client:close()

out.failures, out.first_error = failures, first_error
out.rejects_forged = (not forged) and ferr and ferr.code == "BAD_SIGNATURE" or false
out.wall_s = (w1 - w0) / 1000
out.calls_per_s = n / out.wall_s
out.cpu_ms_per_call = (c1 - c0) * 1000 / n            -- os.clock(): user+sys of this process
out.user_ms_per_call = (u1 - u0) * 1000 / n           -- /proc/self/stat (clock ticks)
out.sys_ms_per_call = (s1 - s0) * 1000 / n
out.p50_ms = B.quantile(lat, 0.50)
out.p99_ms = B.quantile(lat, 0.99)
out.max_ms = lat[#lat]
out.rss_before_kb = rss_before
out.peak_rss_kb = B.status_kb("VmHWM")
out.rss_by_mapping, out.private_dirty_kb = B.rss_by_mapping(8)
B.emit(out)
