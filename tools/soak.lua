-- make soak: many revokes in one lua5.4 process against a sandbox it starts,
-- watching the process's resident memory for leaks.
--
--   lua5.4 tools/soak.lua [CALLS=20000] [WARMUP=1000]
--   (run from the repository root; `make soak` sets LUA_PATH/LUA_CPATH)
--
-- Every call is a full revoke: signed request, one reused TLS connection,
-- verified 204.  VmRSS (/proc/self/status) is read after a full GC at the
-- end of the warm-up and at the end; the growth between them must stay under
-- 1 MB.  Exits non-zero when it does not, or when any call failed.
local H = require "helpers"
local wxpay = require "wxpay"
local core = require "wxpay.core"

local CALLS = tonumber(arg[1]) or 20000
local WARMUP = tonumber(arg[2]) or 1000
local LIMIT_KB = 1024
local REPORT_EVERY = 2000

local function rss_kb()
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)%s*kB"))
end

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
  return rss_kb(), collectgarbage("count")
end

local sb = H.sandbox("soak")
local ok, res = pcall(function()
  local client = assert(wxpay.new(sb:options()))
  local no = H.order_no("SOAK")
  sb:order { out_trade_no = no }
  local failures, first_err = 0, nil
  local warm_rss, warm_heap
  local t0, c0 = core.monotonic_ms(), os.clock()
  print(("soak: %d revokes (warm-up %d) against %s, %s, libcurl %s"):format(CALLS, WARMUP,
    sb.cfg.base_url, _VERSION, core.curl_version))
  for i = 1, CALLS do
    local r, err = client:revoke { out_trade_no = no }
    if r ~= true then
      failures = failures + 1
      first_err = first_err or tostring(err)
    end
    if i == WARMUP then
      warm_rss, warm_heap = settle()
      print(("soak: after warm-up (%d calls): VmRSS %d kB, Lua heap %.0f kB"):format(i, warm_rss, warm_heap))
    elseif i % REPORT_EVERY == 0 then
      local ms = core.monotonic_ms() - t0
      print(("soak: %6d calls, %5.1f s, %4.0f calls/s, %.2f ms CPU/call, VmRSS %d kB, failures %d")
        :format(i, ms / 1000, i / ms * 1000, (os.clock() - c0) * 1000 / i, rss_kb(), failures))
    end
  end
  local end_rss, end_heap = settle()
  client:close()
  local st = sb:stats()
  local growth = end_rss - warm_rss
  print(("soak: at the end (%d calls): VmRSS %d kB, Lua heap %.0f kB"):format(CALLS, end_rss, end_heap))
  print(("soak: sandbox saw %d requests on %d connection(s) (%d TLS handshakes)")
    :format(st.requests, st.connections, st.handshakes))
  if first_err then print("soak: first failure: " .. first_err) end
  local pass = failures == 0 and growth < LIMIT_KB
  print(("soak: %d calls, %d failed; RSS growth after warm-up %+d kB (limit %d kB), Lua heap %+.0f kB: %s")
    :format(CALLS, failures, growth, LIMIT_KB, end_heap - warm_heap, pass and "ok" or "FAILED"))
  return pass
end)
sb:stop()
if not ok then
  io.stderr:write("soak: ", tostring(res), "\n")
  os.exit(2)
end
os.exit(res and 0 or 1)
