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

--- The lua_shared_dict called `name` (a client's `shared_dict` option), or
-- nil outside nginx or without a name: pacing, replay nonces and seen-ids
-- all find it here.
function M.shared_dict(name)
  local ngx = name and rawget(_G, "ngx")
  local shared = type(ngx) == "table" and ngx.shared
  return shared and shared[name] or nil
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

-- The process-wide libcurl sessions, one per settings key, shared by every
-- client of this Lua state: {session =, refs =}.  (The C side goes further:
-- every session and multi handle with the same ca_file and proxy shares one
-- connection pool, so batches reuse these connections too.)
local pools = {}

local function pool_key(opts)
  return ("%s\0%s\0%s"):format(opts.ca_file or "", opts.proxy or "", opts.max_idle_s or 7)
end

--- The number of shared sessions alive in this Lua state (tests, diagnostics).
function M.curl_pool_count()
  local n = 0
  for _ in pairs(pools) do n = n + 1 end
  return n
end

-- Runs f when `owner` is collected without close() (Lua 5.4: a table's
-- __gc; LuaJIT: a newproxy userdata, tables have no __gc there).
local newproxy = rawget(_G, "newproxy")
local function gc_guard(f)
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = f
    return p
  end
  return setmetatable({}, { __gc = f })
end

--- A libcurl transport: requests go over the process-wide session for
-- (ca_file, proxy, max_idle_s), one keep-alive connection shared by every
-- client with those settings; timeouts and the answer size limit are per
-- call, so clients with different limits still share it.  close() only
-- drops this client's reference; the last one closes the session.
-- opts: ca_file, proxy (nil: none, environment ignored; "env"; or a URL),
-- timeout_ms, connect_timeout_ms, max_body, max_idle_s.
function M.curl(opts)
  local key = pool_key(opts)
  -- this client's own limits, passed with every request (the shared session's
  -- defaults are whatever the first client had)
  local timeout_ms, connect_timeout_ms = opts.timeout_ms or 10000, opts.connect_timeout_ms or 3000
  local max_body = opts.max_body or 1024 * 1024
  local entry            -- this client's reference, taken on first use
  local t = {}

  local function release()
    local e = entry
    if not e then return end
    entry = nil
    e.refs = e.refs - 1
    if e.refs <= 0 then
      if pools[key] == e then pools[key] = nil end
      e.session:close()
    end
  end

  local function acquire()
    local e = pools[key]
    if not e then
      local s, err = core.session {
        ca_file = opts.ca_file,
        proxy = opts.proxy,
        connect_timeout_ms = opts.connect_timeout_ms,
        timeout_ms = opts.timeout_ms,
        max_body = opts.max_body,
        max_idle_s = opts.max_idle_s or 7,
      }
      if not s then return nil, err end
      e = { session = s, refs = 0 }
      pools[key] = e
    end
    e.refs = e.refs + 1
    entry = e
    t._gc = t._gc or gc_guard(release)
    return e
  end

  function t.request(req)
    local e = entry
    if not e then
      local err
      e, err = acquire()
      if not e then return nil, { code = errors.NETWORK_ERROR, message = err, sent = false } end
    end
    local status, a, b, sent = e.session:request(req.method, req.url, req.headers, req.body,
      req.timeout_ms or timeout_ms, req.connect_timeout_ms or connect_timeout_ms, max_body)
    if not status then
      return nil, { code = a, message = b, sent = sent }
    end
    return { status = status, headers = a, body = b }
  end

  t.close = release
  return t
end

return M
