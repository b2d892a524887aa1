--- Step 6 worker: client:revoke_many(list, {concurrency = C}).
--   lua5.4|luajit bench/batch.lua SANDBOX_JSON PREFIX COUNT CONCURRENCY
-- The driver seeded COUNT paid orders PREFIX1..PREFIXCOUNT. One call revokes
-- them all; every result must be `true`. Client set-up is excluded; the first
-- connections' handshakes are inside the timed call (that is what a batch
-- pays). Prints one JSON line; {available=false} when the method is missing.
local B = require "bench.lib"
local wxpay = require "wxpay"
local core = require "wxpay.core"

local cfg = B.json.decode(assert(B.read(arg[1])))
local prefix, count, conc = arg[2], tonumber(arg[3]), tonumber(arg[4])

local client = assert(wxpay.new {
  mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
  platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file,
  rate = false, -- per-call cost, not WeChat's 150/s pacing (bench/ratelimit.lua measures that)
})
local out = { n = count, concurrency = conc,
  interpreter = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION }

if not client.revoke_many then
  out.available = false
  B.emit(out)
  os.exit(0)
end
out.available = true

local list = {}
for i = 1, count do list[i] = { out_trade_no = prefix .. i } end

local u0, s0 = B.rusage()
local c0, w0 = os.clock(), core.monotonic_ms()
local ok, results, err = pcall(client.revoke_many, client, list, { concurrency = conc })
local c1, w1 = os.clock(), core.monotonic_ms()
local u1, s1 = B.rusage()

if not ok then
  out.error = "revoke_many raised: " .. tostring(results)
elseif type(results) ~= "table" then
  out.error = "revoke_many returned " .. tostring(results) .. " " .. tostring(err)
else
  local good, bad, first = 0, 0, nil
  for i = 1, count do
    if results[i] == true then good = good + 1
    else
      bad = bad + 1
      first = first or ("item " .. i .. ": " .. tostring(results[i]))
    end
  end
  out.succeeded, out.failed, out.first_error = good, bad, first
  out.results_len = #results
end
client:close()
out.wall_s = (w1 - w0) / 1000
out.calls_per_s = count / out.wall_s
out.cpu_ms_per_call = (c1 - c0) * 1000 / count
out.user_ms_per_call = (u1 - u0) * 1000 / count
out.sys_ms_per_call = (s1 - s0) * 1000 / count
out.peak_rss_kb = B.status_kb("VmHWM")
B.emit(out)
