--- One signed exchange: choose the transport (per call), sign, send with
-- backup hosts, have the answer verified, and turn failures into error
-- objects.  Every call of every transport goes through Call:_call.
-- Must not: decide what an answer means for an order (that is the caller's),
-- or log key material (the signing key stays in wxpay.secrets).
local errors = require "wxpay.errors"
local transport = require "wxpay.transport"
local secrets = require "wxpay.secrets"
local core = require "wxpay.core"
local util = require "wxpay.util"

local Call = {}

local now = core.time
local monotonic_ms = core.monotonic_ms
local PREFER_BACKUP_FOR = 300     -- seconds a host that worked stays preferred

-- The transport for this call: chosen per call, so one client serves both
-- nginx request handlers (cosockets) and init/timer-less code (libcurl).
-- The second value is true for the library's own transports, whose answers
-- already have the documented shape (lowercased header names, string body).
function Call:_transport()
  if self._batch then return self._batch.request, true end -- inside revoke_many's scheduler
  local tr = self.transport
  if type(tr) == "function" then return tr, false end
  local use_cosocket
  if tr == "cosocket" then
    use_cosocket = true
  elseif tr == "curl" then
    if not self._warned_curl and transport.cosocket_phase() then
      self._warned_curl = true
      local msg = "libcurl forced inside an nginx request: it blocks the worker"
      if self.logger then self:_log("warn", msg, {}) else transport.ngx_warn(msg) end
    end
  else
    use_cosocket = transport.cosocket_phase()
  end
  if use_cosocket then
    if not self._cosocket then
      self._cosocket = require("wxpay.cosocket").new {
        timeout_ms = self.timeout_ms, connect_timeout_ms = self.connect_timeout_ms,
        max_body = self.max_body,
      }
    end
    return self._cosocket.request, true
  end
  if not self._curl then
    self._curl = transport.curl {
      ca_file = self.ca_file, timeout_ms = self.timeout_ms,
      connect_timeout_ms = self.connect_timeout_ms, max_body = self.max_body,
      proxy = self.proxy,
    }
  end
  return self._curl.request, true
end

-- Waits without burning CPU (ngx.sleep in nginx, a yield inside revoke_many).
function Call:_sleep(ms)
  if self._batch then return self._batch.sleep_ms(ms) end
  return transport.sleep_ms(ms)
end

local CONNECT_LEVEL = { NETWORK_ERROR = true, TIMEOUT = true, TLS_ERROR = true }

-- Normalises what a transport returned into an error object.
local function transport_error(terr)
  if errors.is(terr) then return terr end
  if type(terr) == "table" then
    local code = type(terr.code) == "string" and terr.code or errors.NETWORK_ERROR
    return errors.new(code, tostring(terr.message or code), { sent = terr.sent })
  end
  return errors.new(errors.NETWORK_ERROR, "transport failed: " .. tostring(terr))
end

local function normalize_response(res)
  if type(res) ~= "table" or type(res.status) ~= "number" then
    return nil, errors.new(errors.BAD_RESPONSE, "the transport returned no status")
  end
  local h = {}
  if type(res.headers) == "table" then
    for k, v in pairs(res.headers) do
      if type(k) == "string" then
        if type(v) == "table" then v = v[1] end
        h[k:lower()] = tostring(v)
      end
    end
  end
  local body = res.body
  if body == nil then body = "" end
  if type(body) ~= "string" then
    return nil, errors.new(errors.BAD_RESPONSE, "the transport returned a non-string body")
  end
  return { status = res.status, headers = h, body = body }
end

--- Signs and sends one request, trying backup hosts on connection-level
-- failures that happened before the request could have been received.
-- Returns the raw (unverified) response or nil, err.
function Call:_send(method, target, body, opt)
  local s = secrets.open(self)
  local auth, aerr = s.key:authorization(self.auth_mchid, self.serial_no, method, target, body)
  if not auth then return nil, errors.new(errors.CONFIG_ERROR, "signing failed: " .. tostring(aerr)) end
  local headers = {
    ["Authorization"] = auth,
    ["Accept"] = "application/json",
    ["Content-Type"] = "application/json",
    ["User-Agent"] = self.user_agent,
  }
  local send, own = self:_transport()
  local urls, n = self.base_urls, #self.base_urls
  local first = self.preferred
  if first ~= 1 and (self.preferred_until or 0) < now() then first, self.preferred = 1, 1 end
  local timeout = self.timeout_ms
  if opt and opt.timeout_ms then timeout = math.max(1, math.min(timeout, math.floor(opt.timeout_ms))) end
  local last
  for k = 0, n - 1 do
    local i = (first - 1 + k) % n + 1
    local t0 = monotonic_ms()
    local res, terr = send {
      method = method, url = urls[i] .. target, headers = headers, body = body,
      timeout_ms = timeout, connect_timeout_ms = math.min(self.connect_timeout_ms, timeout),
    }
    local ms = monotonic_ms() - t0
    if res then
      local r, rerr = res, nil
      if not own then r, rerr = normalize_response(res) end -- a user's function
      if not r then return nil, rerr end
      if i ~= self.preferred then
        self.preferred, self.preferred_until = i, now() + PREFER_BACKUP_FOR
      end
      r.base_url, r.ms = urls[i], ms
      return r
    end
    last = transport_error(terr)
    last.base_url = urls[i]
    self:_log("warn", "request failed", { method = method, target = target, host = urls[i],
      code = last.code, message = last.message, sent = last.sent, ms = ms })
    if not (last.sent == false and CONNECT_LEVEL[last.code]) or k == n - 1 then break end
    self:_log("warn", "switching host", { from = urls[i], to = urls[(i % n) + 1] })
  end
  return nil, last
end

-- An error's detail without JSON nulls (cjson.null prints as "userdata: (nil)"):
-- a null field is left out, as if the answer had not sent it.
local function strip_nulls(t, depth)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "table" and depth < 8 then out[k] = strip_nulls(v, depth + 1)
    elseif v ~= util.null then out[k] = v end
  end
  return out
end

-- An error object from an answer that is not the expected one (verified
-- when signed; `verified` is passed when the caller already checked).
function Call:_error_from(r, verified)
  local why = "its signature was checked already"
  if verified == nil then verified, why = self:_verify(r) end
  local data = util.json_decode(r.body)
  local rid = r.headers["request-id"]
  local code, message, detail
  if type(data) == "table" and type(data.code) == "string" and data.code ~= "" then
    code = data.code
    message = type(data.message) == "string" and data.message or code
    detail = type(data.detail) == "table" and strip_nulls(data.detail, 1) or nil
  else
    code = errors.BAD_RESPONSE
    message = ("unexpected HTTP %d without an error code"):format(r.status)
  end
  if not verified then message = message .. " [unverified: " .. why .. "]" end
  return nil, errors.new(code, message, { status = r.status, detail = detail,
    request_id = rid, verified = verified, retryable = errors.retryable(code, r.status) })
end

--- One signed, verified exchange.  Returns the verified response or nil, err.
-- With `expect`, a verified 2xx of another status is an error too: its WeChat
-- code when it carries one (202 {"code":"USERPAYING"}), else BAD_RESPONSE.
function Call:_call(method, target, body, opt, expect)
  local ok, kerr = self:_ensure_keys()
  if not ok then return nil, kerr end
  local r, err = self:_send(method, target, body, opt)
  if not r then return nil, err end
  if r.status < 200 or r.status > 299 then return self:_error_from(r) end
  local verified, why = self:_verify(r)
  if not verified then
    return nil, errors.new(errors.BAD_SIGNATURE, why, { status = r.status,
      request_id = r.headers["request-id"], verified = false })
  end
  self:_log("debug", "answer verified", { method = method, target = target, status = r.status,
    request_id = r.headers["request-id"], ms = r.ms })
  if expect and r.status ~= expect then return self:_error_from(r, true) end
  return r
end


return Call
