--- Step 4 worker: what a fresh process pays for its first revoke.
--   lua5.4 bench/cold.lua WXPAY_CONFIG_JSON OUT_TRADE_NO [phases]
-- Loads the module, builds a client from files (the config file names the key,
-- the platform certificate and the CA by path), completes one revoke (TCP
-- connect + TLS handshake + signed request + verified 204) and exits.
-- With a third argument it prints its phase times (ms) as one JSON line.
local c_start = os.clock()                 -- CPU spent before the script ran
local core = require "wxpay.core"          -- dlopen of core.so, libcurl, OpenSSL
local m_core = core.monotonic_ms()
local wxpay = require "wxpay"
local m_req = core.monotonic_ms()
local client = assert(wxpay.new(arg[1]))
local m_new = core.monotonic_ms()
local ok, err = client:revoke { out_trade_no = arg[2] }
local m_rev = core.monotonic_ms()
if not ok then
  io.stderr:write("cold revoke failed: ", tostring(err), "\n")
  os.exit(1)
end
client:close()
if arg[3] then
  io.stdout:write(('{"startup_cpu_ms":%.3f,"require_lua_ms":%.3f,"new_ms":%.3f,'
    .. '"first_revoke_ms":%.3f,"total_cpu_ms":%.3f}\n')
    :format(c_start * 1000, m_req - m_core, m_new - m_req, m_rev - m_new, os.clock() * 1000))
end
