--- wxpay.cosocket: the transport for nginx (OpenResty / ngx_lua).
--
-- HTTPS/1.1 over `ngx.socket.tcp`, so a call yields to nginx's event loop
-- instead of blocking the worker, with connections kept in nginx's per-worker
-- pool between calls.  The contract is the libcurl transport's
-- (wxpay.transport): `request(req)` takes {method=, url=, headers=, body=,
-- timeout_ms=, connect_timeout_ms=} and returns {status=, headers= (lowercased
-- names, first value wins), body=} or nil, {code=, message=, sent=}, with code
-- NETWORK_ERROR, TIMEOUT, TLS_ERROR or BAD_RESPONSE, and `sent == false` only
-- when the request cannot have reached the server.  Signing and verification
-- stay above this line, in wxpay.call and wxpay.verify.
-- Must not: block the worker, or see key material.
--
-- nginx configuration this relies on (see docs/openresty.md):
--   * `lua_ssl_trusted_certificate`: the CA bundle the server is verified
--     against (verification is always on; `ca_file` only applies to libcurl);
--   * `resolver`: cosockets resolve host names only through it.  The name
--     `localhost` is the one exception: it is connected to 127.0.0.1 directly
--     (still verified as "localhost"), so local test servers need no resolver.
local errors = require "wxpay.errors"
local transport = require "wxpay.transport"

local ngx = ngx
local tcp = ngx.socket.tcp
local ngx_now = ngx.now
local update_time = ngx.update_time
local concat = table.concat
local find, lower, match, sub, gmatch, gsub = string.find, string.lower, string.match,
  string.sub, string.gmatch, string.gsub
local tonumber, tostring, type, pairs = tonumber, tostring, type, pairs
local floor, min, max = math.floor, math.min, math.max

local NETWORK_ERROR, TIMEOUT, TLS_ERROR, BAD_RESPONSE =
  errors.NETWORK_ERROR, errors.TIMEOUT, errors.TLS_ERROR, errors.BAD_RESPONSE

local M = {
  -- WeChat Pay closes idle connections after 8 s: keep ours idle well under that.
  IDLE_MS = 6000,
  -- pooled connections per worker and per host:port/SNI
  POOL_SIZE = 16,
  -- the header section of an answer may not be larger than this
  MAX_HEADER_BYTES = 64 * 1024,
  MAX_HEADERS = 100,
}

local function fail(code, message, sent)
  return nil, { code = code, message = message, sent = sent }
end

local function clock_ms()
  return ngx_now() * 1000
end

-------------------------------------------------------------------------------
-- URLs and the request bytes
-------------------------------------------------------------------------------

--- https://host[:port]/path?query -> table or nil, why
local function parse_url(url)
  if type(url) ~= "string" then return nil, "the URL is not a string" end
  local scheme, rest = match(url, "^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "malformed URL " .. url end
  if lower(scheme) ~= "https" then
    return nil, "the cosocket transport speaks https only (TLS is never switched off)"
  end
  local authority, target = match(rest, "^([^/?#]*)([^#]*)")
  if target == "" then
    target = "/"
  elseif sub(target, 1, 1) == "?" then
    target = "/" .. target
  end
  local host, port, v6
  if sub(authority, 1, 1) == "[" then
    host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
    v6 = true
  else
    host, port = match(authority, "^([%w.%-]+):?(%d*)$")
  end
  if not host then return nil, "malformed host in URL " .. url end
  port = port == "" and 443 or tonumber(port)
  if not port or port < 1 or port > 65535 then return nil, "bad port in URL " .. url end
  host = lower(host)
  local shown = v6 and ("[" .. host .. "]") or host
  local addr = shown
  if host == "localhost" then addr = "127.0.0.1" end   -- no resolver needed for it
  return {
    host = host,
    addr = addr,
    ip = v6 or addr == "127.0.0.1" or match(addr, "^%d+%.%d+%.%d+%.%d+$") ~= nil,
    port = port,
    target = target,
    host_header = port == 443 and shown or (shown .. ":" .. port),
    -- one pool per destination and TLS name: different hosts never share
    pool = "wxpay:" .. shown .. ":" .. port .. ":" .. host,
  }
end

local OWN_HEADERS = { host = true, ["content-length"] = true, connection = true,
  ["transfer-encoding"] = true }

local function build_request(req, u)
  local method = req.method
  if type(method) ~= "string" or not match(method, "^%u+$") then
    error("wxpay.cosocket: the request method must be an upper-case token", 3)
  end
  local body = req.body or ""
  if type(body) ~= "string" then error("wxpay.cosocket: the request body must be a string", 3) end
  local out, n = { method, " ", u.target, " HTTP/1.1\r\nHost: ", u.host_header, "\r\n" }, 6
  if req.headers ~= nil and type(req.headers) ~= "table" then
    error("wxpay.cosocket: the request headers must be a table", 3)
  end
  for name, value in pairs(req.headers or {}) do
    if type(name) ~= "string" or type(value) ~= "string" or not match(name, "^[%w!#$%%&'*+.^_`|~-]+$")
      or find(value, "[%z\r\n]") then
      error("wxpay.cosocket: headers must be strings without CR, LF or NUL", 3)
    end
    if not OWN_HEADERS[lower(name)] then
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, ": ", value, "\r\n"
      n = n + 4
    end
  end
  if body ~= "" or (method ~= "GET" and method ~= "HEAD") then
    out[n + 1], out[n + 2], out[n + 3] = "Content-Length: ", tostring(#body), "\r\n"
    n = n + 3
  end
  out[n + 1], out[n + 2] = "Connection: keep-alive\r\n\r\n", body
  return out
end

-------------------------------------------------------------------------------
-- Reading the answer
-------------------------------------------------------------------------------

-- An exchange's state: the socket, the deadline, whether any answer byte came.
local Ex = {}
Ex.__index = Ex

function Ex:left()
  return floor(self.deadline - clock_ms())
end

-- Arms the socket's timeouts for the next operation; false when time is up.
function Ex:arm()
  local left = self:left()
  if left <= 0 then return false end
  self.sock:settimeouts(left, left, left)
  return true
end

-- An I/O error after the request went out.
function Ex:io_error(err, what)
  if err == "timeout" then
    return fail(TIMEOUT, ("timed out after %d ms while %s"):format(self.timeout, what), true)
  end
  if self.got == 0 then
    return fail(NETWORK_ERROR, "the server closed the connection without answering ("
      .. tostring(err) .. ")", true)
  end
  return fail(BAD_RESPONSE, ("the answer is truncated: %s while %s"):format(tostring(err), what), true)
end

function Ex:timed_out(what)
  return fail(TIMEOUT, ("timed out after %d ms while %s"):format(self.timeout, what), true)
end

-- Reads the header section; returns the text without the final CRLFCRLF.
function Ex:read_head()
  local reader = self.reader
  local parts, n, size = {}, 0, 0
  while true do
    if not self:arm() then return self:timed_out("reading the answer's headers") end
    local data, err, partial = reader(4096)
    if not data then
      if not err then break end           -- the blank line was found
      if partial and partial ~= "" then self.got = self.got + #partial end
      return nil, err
    end
    n, size = n + 1, size + #data
    parts[n] = data
    self.got = self.got + #data
    if size > M.MAX_HEADER_BYTES then
      return nil, "too large"
    end
  end
  self.got = self.got + 4
  return concat(parts)
end

local function parse_head(text)
  local status_line, rest = match(text, "^([^\r\n]*)\r?\n?(.*)$")
  local major, minor, status = match(status_line, "^HTTP/(%d)%.(%d) (%d%d%d)")
  if not major then
    return nil, "the answer does not start with an HTTP/1.x status line"
  end
  local headers, all, count, last = {}, {}, 0, nil
  for line in gmatch(rest, "([^\n]*)\n?") do
    line = gsub(line, "\r$", "")
    if line ~= "" then
      local c = sub(line, 1, 1)
      if c == " " or c == "\t" then      -- obsolete line folding: continues the last value
        if not last then return nil, "malformed header line" end
        headers[last] = headers[last] .. " " .. match(line, "^%s*(.-)%s*$")
      else
        local name, value = match(line, "^([^:%s]+):%s*(.-)%s*$")
        if not name then return nil, "malformed header line" end
        count = count + 1
        if count > M.MAX_HEADERS then return nil, "too many header lines" end
        name = lower(name)
        local list = all[name]
        if list then list[#list + 1] = value else all[name] = { value } end
        if headers[name] == nil then headers[name] = value; last = name else last = nil end
      end
    end
  end
  return {
    status = tonumber(status),
    version = major .. "." .. minor,
    headers = headers,
    all = all,
  }
end

local function has_token(value, token)
  if not value then return false end
  for t in gmatch(lower(value), "[^,%s]+") do
    if t == token then return true end
  end
  return false
end

-- The body, framed by Content-Length; returns body or nil, err (already final).
function Ex:read_length(n, max_body)
  if n > max_body then
    return fail(BAD_RESPONSE, ("the answer is larger than the size limit (%d > %d bytes)")
      :format(n, max_body), true)
  end
  if n == 0 then return "" end
  if not self:arm() then return self:timed_out("reading the answer's body") end
  local data, err, partial = self.sock:receive(n)
  if not data then
    if err == "timeout" then return self:io_error(err, "reading the answer's body") end
    return fail(BAD_RESPONSE, ("the answer is truncated: %d of %d body bytes, then %s")
      :format(partial and #partial or 0, n, tostring(err)), true)
  end
  return data
end

function Ex:read_line(what)
  if not self:arm() then return self:timed_out(what) end
  local line, err = self.sock:receive("*l")
  if not line then
    if err == "timeout" then return self:io_error(err, what) end
    return fail(BAD_RESPONSE, "the chunked answer is truncated (" .. tostring(err) .. ")", true)
  end
  return line
end

function Ex:read_chunked(max_body)
  local parts, n, total = {}, 0, 0
  while true do
    local line, err = self:read_line("reading a chunk size")
    if not line then return nil, err end
    local hex = match(line, "^%s*(%x+)%s*;?")
    if not hex or #hex > 8 then
      return fail(BAD_RESPONSE, "malformed chunk size line in the answer", true)
    end
    local size = tonumber(hex, 16)
    if size == 0 then break end
    total = total + size
    if total > max_body then
      return fail(BAD_RESPONSE, ("the answer is larger than the size limit (%d bytes)"):format(max_body), true)
    end
    local data, derr = self:read_length(size, max_body)
    if not data then return nil, derr end
    n = n + 1
    parts[n] = data
    local crlf, cerr = self:read_line("reading a chunk end")
    if not crlf then return nil, cerr end
    if crlf ~= "" then return fail(BAD_RESPONSE, "malformed chunk in the answer", true) end
  end
  for _ = 1, M.MAX_HEADERS do   -- trailers, up to the blank line
    local line, err = self:read_line("reading the chunked trailer")
    if not line then return nil, err end
    if line == "" then return concat(parts) end
  end
  return fail(BAD_RESPONSE, "too many trailer lines in the chunked answer", true)
end

-- A body delimited by the end of the connection (HTTP/1.0 style).
function Ex:read_to_close(max_body)
  local parts, n, total = {}, 0, 0
  while true do
    if not self:arm() then return self:timed_out("reading the answer's body") end
    local data, err, partial = self.sock:receive(8192)
    data = data or partial
    if data and data ~= "" then
      total = total + #data
      if total > max_body then
        return fail(BAD_RESPONSE, ("the answer is larger than the size limit (%d bytes)"):format(max_body), true)
      end
      n = n + 1
      parts[n] = data
    end
    if err == "closed" then return concat(parts) end
    if err then return self:io_error(err, "reading the answer's body") end
  end
end

-------------------------------------------------------------------------------
-- One exchange on one connection
-------------------------------------------------------------------------------

local function connect_error(u, err)
  local msg = ("cannot connect to %s:%d: %s"):format(u.host, u.port, tostring(err))
  if find(tostring(err), "resolver", 1, true) then
    msg = msg .. " (cosockets resolve host names only through nginx's `resolver` directive)"
  end
  return fail(err == "timeout" and TIMEOUT or NETWORK_ERROR, msg, false)
end

-- sock:connect bounded by `left` ms, DNS included.  nginx's resolver answers to
-- `resolver_timeout` (30 s by default), not to the socket's timeouts, so a host
-- name is connected from a light thread that is killed when the time is up.
-- IP literals (and "localhost", connected as 127.0.0.1) need no resolver.
local function bounded_connect(sock, u, left)
  local opts = { pool = u.pool }
  local threads = ngx.thread
  if u.ip or not threads then return sock:connect(u.addr, u.port, opts) end
  local okc, worker = pcall(threads.spawn, function()
    return "connect", sock:connect(u.addr, u.port, opts)
  end)
  if not okc then return sock:connect(u.addr, u.port, opts) end -- no light threads in this phase
  local timer = threads.spawn(function()
    ngx.sleep(left / 1000)
    return "timer"
  end)
  local done, which, ok, err = threads.wait(worker, timer)
  if not done or which == "connect" then
    threads.kill(timer)
    if not done then return nil, tostring(which) end -- connect raised
    return ok, err
  end
  threads.kill(worker)   -- drops the pending DNS query (or connect) with it
  sock:close()
  return nil, "timeout"
end

-- Opens (or takes from the pool) a connection and does the TLS handshake.
-- Returns sock, reused or nil, err.
local function open(state, u, ex, connect_deadline, drain)
  for _ = 1, M.POOL_SIZE + 1 do
    local sock = tcp()
    ex.sock = sock
    local cleft = floor(min(connect_deadline, ex.deadline) - clock_ms())
    if cleft <= 0 then return fail(TIMEOUT, "timed out before connecting", false) end
    sock:settimeouts(cleft, cleft, cleft)
    local ok, err = bounded_connect(sock, u, cleft)
    if not ok then return connect_error(u, err) end
    local reused = (sock:getreusedtimes() or 0) > 0
    if not reused then
      cleft = floor(min(connect_deadline, ex.deadline) - clock_ms())
      if cleft <= 0 then
        sock:close()
        return fail(TIMEOUT, "timed out before the TLS handshake", false)
      end
      sock:settimeouts(cleft, cleft, cleft)
      local session = state.sessions[u.pool]
      local sess, herr = sock:sslhandshake(session or nil, u.host, true)
      if not sess then
        sock:close()
        state.sessions[u.pool] = nil
        if herr == "timeout" then
          return fail(TIMEOUT, ("TLS handshake with %s:%d timed out"):format(u.host, u.port), false)
        end
        local msg = ("TLS handshake with %s:%d failed: %s"):format(u.host, u.port, tostring(herr))
        if find(tostring(herr), "host mismatch", 1, true) then
          msg = msg .. " (the certificate is not for " .. u.host .. "; base_url must use the"
            .. " server's host name, not an IP address)"
        elseif find(tostring(herr), "certificate", 1, true) or find(tostring(herr), "verify", 1, true) then
          msg = msg .. " (cosockets verify the server against nginx's lua_ssl_trusted_certificate,"
            .. " not ca_file: is the issuing CA there, and lua_ssl_verify_depth deep enough?)"
        end
        return fail(TLS_ERROR, msg, false)
      end
      if type(sess) ~= "boolean" then state.sessions[u.pool] = sess end
      return sock, false
    end
    if not drain then return sock, true end
    -- retrying after a stale pooled connection: the other idle ones are suspect too
    sock:close()
  end
  return fail(NETWORK_ERROR, "could not get a fresh connection", false)
end

-- Returns res or nil, err, retry (retry: a reused connection died before answering).
local function exchange(state, u, req_bytes, ex, method, fresh)
  -- connect_timeout_ms covers TCP connect + TLS handshake (of each attempt)
  local connect_deadline = (fresh and clock_ms() or ex.start) + ex.connect_timeout
  local sock, reused = open(state, u, ex, connect_deadline, fresh)
  if not sock then return nil, reused end
  ex.got = 0
  ex.reader = sock:receiveuntil("\r\n\r\n")

  if not ex:arm() then
    sock:close()
    return fail(TIMEOUT, "timed out before sending the request", false)
  end
  local sent, serr = sock:send(req_bytes)
  if not sent then
    sock:close()
    if reused and serr ~= "timeout" then return nil, nil, true end
    if serr == "timeout" then
      return fail(TIMEOUT, ("timed out after %d ms while sending the request"):format(ex.timeout), true)
    end
    return fail(NETWORK_ERROR, "sending the request failed: " .. tostring(serr), true)
  end

  local head, herr, parsed
  repeat
    head, herr = ex:read_head()
    if not head then
      sock:close()
      if type(herr) == "table" then return nil, herr end
      if herr == "too large" then
        return fail(BAD_RESPONSE, "the answer's header section is too large", true)
      end
      if reused and ex.got == 0 and herr ~= "timeout" then return nil, nil, true end
      return ex:io_error(herr, "reading the answer's headers")
    end
    local perr
    parsed, perr = parse_head(head)
    if not parsed then
      sock:close()
      return fail(BAD_RESPONSE, perr, true)
    end
  until parsed.status >= 200 or parsed.status == 101

  local status, h, all = parsed.status, parsed.headers, parsed.all
  local keep = (parsed.version == "1.1" and not has_token(h.connection, "close"))
    or (parsed.version == "1.0" and has_token(h.connection, "keep-alive"))
  local body, berr
  if method == "HEAD" or status == 204 or status == 304 or status < 200 then
    body = ""
  elseif h["transfer-encoding"] then
    local te = lower(all["transfer-encoding"][#all["transfer-encoding"]])
    if not match(te, "chunked%s*$") then
      sock:close()
      return fail(BAD_RESPONSE, "unsupported Transfer-Encoding " .. te, true)
    end
    if h["content-length"] then keep = false end
    body, berr = ex:read_chunked(state.max_body)
  elseif h["content-length"] then
    local cls = all["content-length"]
    for i = 2, #cls do
      if cls[i] ~= cls[1] then
        sock:close()
        return fail(BAD_RESPONSE, "conflicting Content-Length headers", true)
      end
    end
    local n = match(cls[1], "^%d+$") and #cls[1] <= 15 and tonumber(cls[1])
    if not n then
      sock:close()
      return fail(BAD_RESPONSE, "malformed Content-Length " .. cls[1], true)
    end
    body, berr = ex:read_length(n, state.max_body)
  else
    keep = false
    body, berr = ex:read_to_close(state.max_body)
  end
  if not body then
    sock:close()
    return nil, berr
  end

  local idle = M.IDLE_MS
  local ka = h["keep-alive"] and match(h["keep-alive"], "timeout%s*=%s*(%d+)")
  if ka then idle = min(idle, (tonumber(ka) - 1) * 1000) end
  if keep and idle > 0 and status ~= 101 then
    local ok = sock:setkeepalive(idle, M.POOL_SIZE)
    if not ok then sock:close() end
  else
    sock:close()
  end
  return { status = status, headers = h, body = body }
end

-------------------------------------------------------------------------------
-- The transport
-------------------------------------------------------------------------------

local function positive(v)
  if type(v) == "number" and v > 0 and v == v then return floor(v) end
  return nil
end

--- M.new{timeout_ms=, connect_timeout_ms=, max_body=} -> {request=, close=}
function M.new(opts)
  opts = opts or {}
  local state = {
    timeout_ms = positive(opts.timeout_ms) or 10000,
    connect_timeout_ms = positive(opts.connect_timeout_ms) or 3000,
    max_body = positive(opts.max_body) or 1024 * 1024,
    sessions = {},         -- TLS sessions to resume, by pool name
  }
  local t = {}

  function t.request(req)
    if type(req) ~= "table" then error("wxpay.cosocket: request expects a table", 2) end
    if not transport.cosocket_phase() then
      local ok, phase = pcall(ngx.get_phase)
      return fail(NETWORK_ERROR, ("cosockets are not available in nginx's %s phase "
        .. '(use transport = "auto" to fall back to libcurl there)'):format(ok and phase or "current"), false)
    end
    local u, uerr = parse_url(req.url)
    if not u then return fail(NETWORK_ERROR, uerr, false) end
    local bytes = build_request(req, u)
    update_time()
    local start = clock_ms()
    local timeout = positive(req.timeout_ms) or state.timeout_ms
    local ex = setmetatable({
      start = start,
      timeout = timeout,
      deadline = start + timeout,
      connect_timeout = max(1, positive(req.connect_timeout_ms) or state.connect_timeout_ms),
      got = 0,
    }, Ex)
    local res, err, retry = exchange(state, u, bytes, ex, req.method, false)
    if retry then
      -- a pooled connection the server had already closed: once more on a fresh one
      res, err = exchange(state, u, bytes, ex, req.method, true)
      if err then err.sent = true end   -- the first attempt may have reached the server
    end
    return res, err
  end

  function t.close()
    state.sessions = {}
  end

  return t
end

M._parse_url = parse_url
M._parse_head = parse_head

return M
