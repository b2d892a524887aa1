--- The HTTP seam.  A transport is `function(req) -> {status=, headers=, body=}
-- | nil, err` with req = {method=, url=, headers=, body=, timeout_ms=,
-- connect_timeout_ms=}.  Signing and verification happen above this line and
-- are shared by every transport.  Must not: sign, verify or see key material.
local core = require "wxpay.core"
local errors = require "wxpay.errors"

local M = {}

-- ngx_lua phases in which cosockets may be used.
local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

--- True inside an nginx context where cosockets (and ngx.sleep) are allowed.
function M.cosocket_phase()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or not ngx.get_phase then return false end
  local ok, phase = pcall(ngx.get_phase)
  return ok and COSOCKET_PHASES[phase] == true
end

function M.in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and ngx.get_phase ~= nil
end

--- A warning in nginx's error log (no-op outside nginx).
function M.ngx_warn(msg)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and ngx.log and ngx.WARN then ngx.log(ngx.WARN, "wxpay: ", msg) end
end

--- Sleeps without burning CPU: ngx.sleep where it yields, nanosleep elsewhere.
function M.sleep_ms(ms)
  if ms <= 0 then return end
  if M.cosocket_phase() then
    rawget(_G, "ngx").sleep(ms / 1000)
  else
    core.sleep_ms(ms)
  end
end

--- {name = value} -> {"name: value", …}: the header lines libcurl takes.
function M.header_lines(headers)
  local list, n = {}, 0
  for k, v in pairs(headers) do
    n = n + 1
    list[n] = k .. ": " .. v
  end
  return list
end

--- A libcurl transport over one reused session (one keep-alive connection).
function M.curl(opts)
  local session
  local t = {}
  function t.request(req)
    if not session then
      local s, err = core.session {
        ca_file = opts.ca_file,
        proxy = opts.proxy,   -- nil: no proxy, whatever the environment says; "env": its variables
        connect_timeout_ms = opts.connect_timeout_ms,
        timeout_ms = opts.timeout_ms,
        max_body = opts.max_body,
        max_idle_s = 7,
      }
      if not s then return nil, { code = errors.NETWORK_ERROR, message = err, sent = false } end
      session = s
    end
    local status, a, b, sent = session:request(req.method, req.url, M.header_lines(req.headers), req.body,
      req.timeout_ms, req.connect_timeout_ms)
    if not status then
      return nil, { code = a, message = b, sent = sent }
    end
    return { status = status, headers = a, body = b }
  end
  function t.close()
    if session then session:close() end
    session = nil
  end
  return t
end

return M
