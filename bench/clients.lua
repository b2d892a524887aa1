--- Step 7 worker: N clients in one process (wxpay.new with the sandbox's
-- config), one revoke each, all kept open.
--   lua5.4|luajit bench/clients.lua SANDBOX_JSON N OUT_TRADE_NO
-- RSS (VmRSS, after a full GC) before any client, after the first client's
-- revoke and after the last one's: the per-client figure is beyond the first
-- (the first pays for the shared session, connection and TLS state).  With
-- BENCH_CLIENTS_SPLIT=1 it also measures the parts of a client in C alone
-- (private key parse, certificate parse) to show what dominates.
-- Prints one JSON line.
local B = require "bench.lib"
local wxpay = require "wxpay"
local core = require "wxpay.core"

local cfg = B.json.decode(assert(B.read(arg[1])))
local n = tonumber(arg[2] or "1000")
local order = assert(arg[3], "usage: clients.lua SANDBOX_JSON N OUT_TRADE_NO")

local function rss()
  collectgarbage()
  collectgarbage()
  return B.status_kb("VmRSS")
end

local opts = {
  mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
  platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file,
  rate = false, -- per-client cost, not WeChat's 150/s pacing (bench/ratelimit.lua measures that)
}
local out = { interpreter = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION, n = n }
if os.getenv("BENCH_CLIENTS_SPLIT") then
  -- the C parts of a client on their own: what one more key / certificate costs
  local pem, cert = B.read(cfg.private_key), B.read(cfg.platform_cert)
  local keys, m = {}, 200
  local a = rss()
  for i = 1, m do keys[i] = assert(core.load_private_key(pem)) end
  local b = rss()
  for i = 1, m do keys[i]:sign("x") end      -- RSA blinding and Montgomery caches appear on first use
  local c = rss()
  local certs = {}
  for i = 1, m do certs[i] = assert(core.load_certificate(cert)) end
  local d = rss()
  for i = 1, m do
    keys[i]:close()
    certs[i]:close()
  end
  out.split_kb = { private_key_parse = (b - a) / m, private_key_first_sign = (c - b) / m,
    certificate_parse = (d - c) / m }
end
local clients = {}
local failures, first_error = 0, nil
local r0 = rss()
local c0 = os.clock()
for i = 1, n do
  local c = assert(wxpay.new(opts))
  local ok, err = c:revoke { out_trade_no = order }
  if not ok then
    failures = failures + 1
    first_error = first_error or tostring(err)
  end
  clients[i] = c
  if i == 1 then out.rss_after_first_kb = rss() end
end
out.cpu_ms_per_client = (os.clock() - c0) * 1000 / n
out.rss_after_all_kb = rss()
out.rss_before_kb = r0
out.first_client_kb = out.rss_after_first_kb - r0
out.kb_per_client_beyond_first = (out.rss_after_all_kb - out.rss_after_first_kb) / math.max(1, n - 1)
out.failures, out.first_error = failures, first_error

for _, c in ipairs(clients) do c:close() end
B.emit(out)
