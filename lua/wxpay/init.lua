--- wxpay: WeChat Pay Global API v3 "Revoke Order" and the protocol around it.
--
--   local wxpay = require "wxpay"
--   local client = assert(wxpay.new{ mchid = "1900000109", serial_no = "…",
--     private_key = "apiclient_key.pem", platform_certs = { "wechatpay.pem" } })
--   local ok, err = client:revoke{ out_trade_no = "1217752501201407033233368018" }
--
-- See README.md and the api contract in docs.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local util = require "wxpay.util"
local KeyStore = require "wxpay.keystore"
local transport = require "wxpay.transport"

local M = {
  _VERSION = core._VERSION,
  errors = errors,
  load_config = util.load_config, -- the options table a config file holds
}

local DEFAULT_BASE_URL = "https://apihk.mch.weixin.qq.com"
local CLOCK_SKEW = 300            -- seconds an answer's timestamp may be off
local REFRESH_EVERY = 12 * 3600   -- certificate refresh interval
local UNKNOWN_SERIAL_PAUSE = 60   -- at most one download a minute for unknown serials
local PREFER_BACKUP_FOR = 300     -- seconds a host that worked stays preferred
local SIG_TYPE = "WECHATPAY2-SHA256-RSA2048"

local now = core.time
local monotonic_ms = core.monotonic_ms

local lua_version = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
local USER_AGENT = ("wxpay/%s (%s; libcurl/%s)"):format(core._VERSION, lua_version, core.curl_version)

-- Secrets live here, keyed by client, never in the client table itself, so a
-- REPL user dumping the client with pairs() sees no key material.
local secrets = setmetatable({}, { __mode = "k" })

local Client = {}
Client.__index = Client
Client.__name = "wxpay.Client"

-------------------------------------------------------------------------------
-- Options
-------------------------------------------------------------------------------

local OPTIONS = {
  mchid = "string", sp_mchid = "string", sub_mchid = "string", serial_no = "string",
  private_key = "string", platform_certs = "table", public_key = "string",
  public_key_id = "string", apiv3_key = "string", base_url = "string",
  backup_urls = "table", ca_file = "string", timeout_ms = "number",
  connect_timeout_ms = "number", transport = "string|function", user_agent = "string",
  logger = "function", max_body_bytes = "number",
}

local function check_url(u, what)
  if type(u) ~= "string" then return nil, what .. " must be a string" end
  local host, port = u:match("^https://([%w%.%-]+)(:?%d*)/?$")
  if not host then host, port = u:match("^https://(%[[%x:]+%])(:?%d*)/?$") end
  local pn = port and tonumber(port:sub(2))
  if not host or (port ~= "" and not (pn and pn >= 1 and pn <= 65535)) then
    if u:match("^http://") then return nil, what .. " must use https (TLS is never switched off)" end
    return nil, what .. " must look like https://host[:port], got " .. util.show(u)
  end
  return (u:gsub("/$", ""))
end

local function validate(opts)
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then return util.config_error("unknown option " .. util.show(tostring(k))) end
    if not want:find(type(v), 1, true) then
      return util.config_error(("option %s must be a %s, got %s"):format(k, want, type(v)))
    end
  end
  local o = {}
  if opts.mchid and opts.sp_mchid then
    return util.config_error("give mchid (common mode) or sp_mchid (institutional mode), not both")
  end
  if opts.sp_mchid then
    if not util.is_digits(opts.sp_mchid) then return util.config_error("sp_mchid must be digits") end
    if opts.sub_mchid ~= nil and not util.is_digits(opts.sub_mchid) then
      return util.config_error("sub_mchid must be digits")
    end
    o.mode, o.sp_mchid, o.sub_mchid, o.auth_mchid = "institutional", opts.sp_mchid, opts.sub_mchid, opts.sp_mchid
  elseif opts.mchid then
    if not util.is_digits(opts.mchid) then return util.config_error("mchid must be digits") end
    if opts.sub_mchid ~= nil then
      return util.config_error("sub_mchid is for institutional mode: give sp_mchid with it")
    end
    o.mode, o.mchid, o.auth_mchid = "common", opts.mchid, opts.mchid
  else
    return util.config_error("missing mchid (common mode) or sp_mchid (institutional mode)")
  end
  if type(opts.serial_no) ~= "string" or not opts.serial_no:match("^%x+$") or #opts.serial_no > 64 then
    return util.config_error("serial_no must be the hex serial of the merchant API certificate")
  end
  o.serial_no = opts.serial_no:upper()
  if not opts.private_key then return util.config_error("missing private_key (PEM text or path)") end

  local base, err = check_url(opts.base_url or DEFAULT_BASE_URL, "base_url")
  if not base then return util.config_error(err) end
  o.base_urls = { base }
  if opts.backup_urls then
    for i, u in ipairs(opts.backup_urls) do
      local b, berr = check_url(u, ("backup_urls[%d]"):format(i))
      if not b then return util.config_error(berr) end
      o.base_urls[#o.base_urls + 1] = b
    end
  end
  for _, k in ipairs { "timeout_ms", "connect_timeout_ms", "max_body_bytes" } do
    local v = opts[k]
    if v ~= nil and (v ~= v or v <= 0 or v > 2 ^ 31 or v % 1 ~= 0) then
      return util.config_error(k .. " must be a positive whole number")
    end
  end
  o.timeout_ms = opts.timeout_ms or 10000
  o.connect_timeout_ms = opts.connect_timeout_ms or 3000
  o.max_body = opts.max_body_bytes or 1024 * 1024
  if opts.ca_file then
    local pem, rerr = util.read_file(opts.ca_file)
    if not pem then return util.config_error("ca_file is not readable: " .. rerr) end
    if not pem:find("-----BEGIN CERTIFICATE-----", 1, true) then
      return util.config_error("ca_file holds no PEM certificate: " .. util.show(opts.ca_file))
    end
    o.ca_file = opts.ca_file
  end
  local tr = opts.transport or "auto"
  if type(tr) == "string" and tr ~= "auto" and tr ~= "curl" and tr ~= "cosocket" then
    return util.config_error('transport must be "auto", "curl", "cosocket" or a function')
  end
  if tr == "cosocket" and not transport.in_nginx() then
    return util.config_error('transport "cosocket" needs OpenResty/nginx (ngx is not available)')
  end
  o.transport = tr
  if opts.user_agent and (opts.user_agent:find("[%c]") or #opts.user_agent > 200) then
    return util.config_error("user_agent must be printable text of at most 200 bytes")
  end
  o.user_agent = opts.user_agent and (USER_AGENT .. " " .. opts.user_agent) or USER_AGENT
  o.logger = opts.logger
  if opts.apiv3_key ~= nil and #opts.apiv3_key ~= 32 then
    return util.config_error(("apiv3_key must be exactly 32 bytes, got %d"):format(#opts.apiv3_key))
  end
  if (opts.public_key == nil) ~= (opts.public_key_id == nil) then
    return util.config_error("public_key and public_key_id go together")
  end
  if opts.public_key_id and not opts.public_key_id:match("^PUB_KEY_ID_%w+$") then
    return util.config_error("public_key_id must look like PUB_KEY_ID_…")
  end
  if not (opts.platform_certs or opts.public_key or opts.apiv3_key) then
    return util.config_error("no way to verify answers: give platform_certs, public_key "
      .. "(+ public_key_id) or apiv3_key; verification cannot be switched off")
  end
  return o
end

local function warn_key_mode(path, log)
  local mode = core.file_mode(path)
  if mode and mode % 64 ~= 0 then -- any bit for group or others
    local msg = ("private key file %s is readable by group/others (mode %o): chmod 600 it")
      :format(path, mode)
    if log then log("warn", msg, { path = path }) else io.stderr:write("wxpay: warning: ", msg, "\n") end
  end
end

--- wxpay.new(opts | config_path) -> client | nil, err
function M.new(opts)
  if type(opts) == "string" then
    local cfg, err = util.load_config(opts)
    if not cfg then return util.config_error(err) end
    opts = cfg
  elseif type(opts) ~= "table" then
    util.raise("wxpay.new expects a table of options or a config file path, got " .. type(opts))
  end
  local o, err = validate(opts)
  if not o then return nil, err end

  local pem, path, rerr = util.pem_or_path(opts.private_key)
  if not pem then return util.config_error("private_key is not readable: " .. tostring(rerr)) end
  local key, kerr = core.load_private_key(pem)
  if not key then return util.config_error("private_key: " .. kerr) end
  if path then warn_key_mode(path, o.logger) end

  local store = KeyStore.new()
  local certs = opts.platform_certs
  if certs then
    if type(certs) == "string" then certs = { certs } end
    if #certs == 0 then return util.config_error("platform_certs is an empty list") end
    for i, c in ipairs(certs) do
      if type(c) ~= "string" then
        return util.config_error(("platform_certs[%d] must be a string"):format(i))
      end
      local cpem, _, cerr = util.pem_or_path(c)
      if not cpem then return util.config_error(("platform_certs[%d] is not readable: %s"):format(i, cerr)) end
      local e, perr = store:add_certificate(cpem, "config")
      if not e then return util.config_error(("platform_certs[%d]: %s"):format(i, perr)) end
    end
  end
  if opts.public_key then
    local ppem, _, perr = util.pem_or_path(opts.public_key)
    if not ppem then return util.config_error("public_key is not readable: " .. tostring(perr)) end
    local e, lerr = store:add_public_key(ppem, opts.public_key_id)
    if not e then return util.config_error("public_key: " .. lerr) end
  end

  local self = setmetatable(o, Client)
  self.keys = store
  self.preferred = 1
  secrets[self] = { key = key, apiv3_key = opts.apiv3_key }
  return self
end

-------------------------------------------------------------------------------
-- Sending and verifying
-------------------------------------------------------------------------------

function Client:_log(level, message, fields)
  local log = self.logger
  if log then
    local ok, err = pcall(log, level, message, fields or {})
    if not ok then io.stderr:write("wxpay: logger failed: ", tostring(err), "\n") end
  end
end

local function check_open(self)
  local s = secrets[self]
  if not s or not s.key then util.raise("attempt to use a closed wxpay.Client", 3) end
  return s
end

-- The transport for this call: chosen per call, so one client serves both
-- nginx request handlers (cosockets) and init/timer-less code (libcurl).
-- The second value is true for the library's own transports, whose answers
-- already have the documented shape (lowercased header names, string body).
function Client:_transport()
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
    }
  end
  return self._curl.request, true
end

-- Waits without burning CPU (ngx.sleep in nginx, a yield inside revoke_many).
function Client:_sleep(ms)
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
function Client:_send(method, target, body, opt)
  local s = check_open(self)
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

--- Verifies an answer's signature. Returns true, or false and why.
function Client:_verify(r)
  local h = r.headers
  local ts, nonce, sig, serial =
    h["wechatpay-timestamp"], h["wechatpay-nonce"], h["wechatpay-signature"], h["wechatpay-serial"]
  if not (ts and nonce and sig and serial) then
    return false, "the answer carries no Wechatpay-Signature/-Timestamp/-Nonce/-Serial"
  end
  local st = h["wechatpay-signature-type"]
  if st and st ~= SIG_TYPE then return false, "unsupported signature type " .. util.show(st) end
  if not ts:match("^%d+$") or #ts > 12 then return false, "malformed Wechatpay-Timestamp" end
  local t = now()
  if math.abs(t - tonumber(ts)) > CLOCK_SKEW then
    return false, ("the answer's timestamp is %d s away from local time (limit %d s)")
      :format(math.floor(math.abs(t - tonumber(ts))), CLOCK_SKEW)
  end
  local key, why = self.keys:get(serial, t)
  if not key and secrets[self].apiv3_key and not self._downloading then
    local last = self.keys.last_unknown
    if not last or t - last >= UNKNOWN_SERIAL_PAUSE then
      self.keys.last_unknown = t
      self:_log("info", "unknown platform serial: refreshing certificates", { serial = serial })
      local ok = self:_refresh_certificates()
      if ok then key, why = self.keys:get(serial, t) end
    end
  end
  if not key then
    return false, ("the answer is signed by %s key %s"):format(why, util.show(serial))
  end
  if not key:verify_response(ts, nonce, r.body, sig) then
    return false, "the answer's signature does not verify"
  end
  return true
end

--- Downloads, decrypts and verifies the platform certificates.
function Client:_refresh_certificates()
  self._downloading = true
  local ok, err = self:_download()
  self._downloading = false
  return ok, err
end

function Client:_download()
  local s = check_open(self)
  local r, err = self:_send("GET", "/v3/global/certificates", "")
  if not r then return nil, err end
  local rid = r.headers["request-id"]
  if r.status ~= 200 then
    local _, e = self:_error_from(r)
    return nil, e
  end
  local t = now()
  local list, perr = KeyStore.parse_download(r.body, s.apiv3_key, t)
  if not list then
    return nil, errors.new(errors.BAD_RESPONSE, "certificate download: " .. perr,
      { status = r.status, request_id = rid })
  end
  -- the bootstrap case: verify the download with what it brought (and what we had)
  local serial = r.headers["wechatpay-serial"]
  local key
  for _, e in ipairs(list) do
    if e.serial_no == serial then key = e.key end
  end
  key = key or self.keys:get(serial or "", t)
  local ts, nonce, sig = r.headers["wechatpay-timestamp"], r.headers["wechatpay-nonce"],
    r.headers["wechatpay-signature"]
  local fresh = ts and ts:match("^%d+$") and math.abs(t - tonumber(ts)) <= CLOCK_SKEW
  if not (key and fresh and nonce and sig and key:verify_response(ts, nonce, r.body, sig)) then
    for _, e in ipairs(list) do e.key:close() end
    return nil, errors.new(errors.BAD_SIGNATURE,
      "the certificate download's signature does not verify with the downloaded set",
      { status = r.status, request_id = rid, verified = false })
  end
  self.keys:replace_downloaded(list, t)
  self:_log("info", "platform certificates downloaded", { count = #list, request_id = rid })
  return true
end

-- Before a call: the first download, and the 12-hourly refresh.
function Client:_ensure_keys()
  local s = secrets[self]
  if not s.apiv3_key then return true end
  local at = self.keys.downloaded_at
  if at and now() - at < REFRESH_EVERY then return true end
  local ok, err = self:_refresh_certificates()
  if ok then return true end
  if self.keys:count() > 0 then   -- keep working with what we have
    self:_log("warn", "certificate refresh failed", { code = err.code, message = err.message })
    self.keys.downloaded_at = now() - REFRESH_EVERY + UNKNOWN_SERIAL_PAUSE
    return true
  end
  return nil, err
end

-- An error object from an answer that is not the expected one (verified
-- when signed; `verified` is passed when the caller already checked).
function Client:_error_from(r, verified)
  local why = "its signature was checked already"
  if verified == nil then verified, why = self:_verify(r) end
  local data = util.json_decode(r.body)
  local rid = r.headers["request-id"]
  local code, message, detail
  if type(data) == "table" and type(data.code) == "string" and data.code ~= "" then
    code = data.code
    message = type(data.message) == "string" and data.message or code
    detail = type(data.detail) == "table" and data.detail or nil
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
function Client:_call(method, target, body, opt, expect)
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

-------------------------------------------------------------------------------
-- Calls
-------------------------------------------------------------------------------

local ORDER_FIELDS = { transaction_id = true, out_trade_no = true, sub_mchid = true }

-- Validates an order call; returns kind, id, sub_mchid or nil, err.
function Client:_order_args(args, what, allowed)
  if type(args) ~= "table" then
    util.raise(("client:%s expects a table like {out_trade_no = \"…\"}, got %s"):format(what, type(args)), 3)
  end
  check_open(self)
  util.check_fields(args, allowed or ORDER_FIELDS, what, 3)
  local kind, id = util.order_id(args, 3)
  if not kind then return nil, id end
  local sub = args.sub_mchid
  if sub ~= nil and type(sub) ~= "string" then
    util.raise("sub_mchid must be a string, got " .. type(sub), 3)
  end
  if self.mode == "common" then
    if sub ~= nil then return util.invalid("sub_mchid is for institutional mode (this client has mchid)") end
  else
    sub = sub or self.sub_mchid
    if sub == nil then return util.invalid("institutional mode needs sub_mchid (per call or in wxpay.new)") end
    if not util.is_digits(sub) then return util.invalid("sub_mchid must be 1-32 digits, got " .. util.show(sub)) end
  end
  return kind, id, sub
end

local function json_string(s) return util.json_encode(s) end

function Client:_revoke_request(kind, id, sub)
  local target = ("/v3/global/micropay/transactions/%s/%s/reverse"):format(kind, util.encode_segment(id))
  local body
  if self.mode == "common" then
    body = '{"mchid":' .. json_string(self.mchid) .. '}'
  else
    body = '{"sp_mchid":' .. json_string(self.sp_mchid) .. ',"sub_mchid":' .. json_string(sub) .. '}'
  end
  return target, body
end

function Client:_query_target(kind, id, sub)
  local path = ("/v3/global/transactions/%s/%s"):format(kind, util.encode_segment(id))
  if self.mode == "common" then
    return path .. "?mchid=" .. util.urlencode(self.mchid)
  end
  return path .. "?sp_mchid=" .. util.urlencode(self.sp_mchid) .. "&sub_mchid=" .. util.urlencode(sub)
end

function Client:_revoke(kind, id, sub, opt)
  local target, body = self:_revoke_request(kind, id, sub)
  local r, err = self:_call("POST", target, body, opt, 204)
  if not r then return nil, err end
  return true
end

function Client:_query(kind, id, sub, opt)
  local r, err = self:_call("GET", self:_query_target(kind, id, sub), "", opt, 200)
  if not r then return nil, err end
  local order = util.json_decode(r.body)
  if type(order) ~= "table" then
    return nil, errors.new(errors.BAD_RESPONSE, "the order query answer is not a JSON object",
      { status = r.status, request_id = r.headers["request-id"] })
  end
  return order
end

--- client:revoke{transaction_id= | out_trade_no=, sub_mchid=?} -> true | nil, err
function Client:revoke(args)
  local kind, id, sub = self:_order_args(args, "revoke")
  if not kind then return nil, id end
  return self:_revoke(kind, id, sub)
end

--- client:query{transaction_id= | out_trade_no=, sub_mchid=?} -> order | nil, err
function Client:query(args)
  local kind, id, sub = self:_order_args(args, "query")
  if not kind then return nil, id end
  return self:_query(kind, id, sub)
end

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local REQUEST_FIELDS = { method = true, path = true, query = true, body = true }

--- client:request{method=, path=, query=?, body=?} -> {status, headers, body, raw}
function Client:request(args)
  if type(args) ~= "table" then util.raise("client:request expects a table, got " .. type(args)) end
  check_open(self)
  util.check_fields(args, REQUEST_FIELDS, "request", 2)
  local method, path, query, body = args.method, args.path, args.query, args.body
  if type(method) ~= "string" or not METHODS[method:upper()] then
    util.raise("request method must be one of GET, POST, PUT, PATCH, DELETE")
  end
  method = method:upper()
  if type(path) ~= "string" then util.raise("request path must be a string") end
  if not path:match("^/v3/[%w%-%._~!$&'()*+,;=:@/%%]*$") or not util.valid_pct(path)
    or util.has_dot_segment(path) then
    return util.invalid("path must start with /v3/ and hold only URL path characters "
      .. "(no . or .. segments), got " .. util.show(path))
  end
  local target = path
  if query ~= nil then
    local qs
    if type(query) == "table" then
      qs = util.encode_query(query)
    elseif type(query) == "string" then
      if query:find("[%s#%c]") then return util.invalid("query must not hold spaces, '#' or control bytes") end
      if not query:match("^[%w%-%._~!$&'()*+,;=:@/?%%]*$") or not util.valid_pct(query) then
        return util.invalid("query must hold only URL query characters (percent-encode the rest), got "
          .. util.show(query))
      end
      qs = query:gsub("^%?", "")
    else
      util.raise("request query must be a table or a string")
    end
    if qs ~= "" then target = target .. "?" .. qs end
  end
  if body == nil then
    body = ""
  elseif type(body) == "table" then
    local b, jerr = util.json_encode(body)
    if not b then return util.invalid("body cannot be encoded as JSON: " .. tostring(jerr)) end
    body = b
  elseif type(body) ~= "string" then
    util.raise("request body must be a table or a string")
  end
  if method == "GET" and body ~= "" then return util.invalid("a GET request has no body") end
  local r, err = self:_call(method, target, body)
  if not r then return nil, err end
  local decoded = r.body
  local ct = r.headers["content-type"] or ""
  if r.body ~= "" and (ct:find("json", 1, true) or r.body:match("^%s*[{%[]")) then
    local d = util.json_decode(r.body)
    if d ~= nil then decoded = d end
  end
  return { status = r.status, headers = r.headers, body = decoded, raw = r.body }
end

--- client:certificates() -> list of {serial_no, effective_time, expire_time, source}
function Client:certificates()
  check_open(self)
  if secrets[self].apiv3_key and not self.keys.downloaded_at then
    local ok, err = self:_refresh_certificates()
    if not ok then return nil, err end
  end
  return self.keys:list()
end

-------------------------------------------------------------------------------
-- cancel: drive an uncertain quick-pay order to a final state
-------------------------------------------------------------------------------

local FINAL = { REVOKED = "REVOKED", CLOSED = "CLOSED" }
local CANCEL_FIELDS = { transaction_id = true, out_trade_no = true, sub_mchid = true,
  paid_at = true, deadline_ms = true }
local GIVE_UP = { TRADE_ERROR = true, REVERSE_EXPIRE = true, INVALID_TRANSACTIONID = true,
  PARAM_ERROR = true, ORDER_NOT_EXIST = true, RESOURCE_NOT_EXISTS = true, SIGN_ERROR = true,
  NO_AUTH = true, INVALID_REQUEST = true, CONFIG_ERROR = true, INVALID_ARGUMENT = true,
  TLS_ERROR = true }
local SEVEN_DAYS = 7 * 86400
local MIN_AGE = 15
local MIN_ATTEMPT_MS = 50

--- client:cancel{…, paid_at=?, deadline_ms=?} -> "REVOKED" | "CLOSED", info | nil, err
function Client:cancel(args)
  local kind, id, sub = self:_order_args(args, "cancel", CANCEL_FIELDS)
  if not kind then return nil, id end
  local paid_at, deadline_ms = args.paid_at, args.deadline_ms
  if paid_at ~= nil and type(paid_at) ~= "number" then util.raise("paid_at must be Unix seconds (a number)") end
  if deadline_ms ~= nil and type(deadline_ms) ~= "number" then util.raise("deadline_ms must be a number") end
  if paid_at and paid_at ~= paid_at then return util.invalid("paid_at is not a number") end
  deadline_ms = deadline_ms or 60000
  if deadline_ms <= 0 or deadline_ms ~= deadline_ms then return util.invalid("deadline_ms must be positive") end

  local start = monotonic_ms()
  local deadline = start + deadline_ms
  local fields = { out_trade_no = args.out_trade_no, transaction_id = args.transaction_id }
  local attempts = 0

  local function fail(err)
    err.attempts = attempts
    return nil, err
  end

  if paid_at then
    local age = now() - paid_at
    if age < -CLOCK_SKEW then
      return fail(errors.new(errors.INVALID_ARGUMENT, "paid_at is in the future (it is the Unix time "
        .. "in seconds of the payment call); nothing was sent"))
    end
    if age > SEVEN_DAYS then
      return fail(errors.new(errors.REVERSE_EXPIRE,
        "the payment is more than 7 days old: revoke is no longer possible, use the refund API"))
    end
    local wait = (MIN_AGE - age) * 1000
    if wait > 0 then
      if start + wait >= deadline then
        return fail(errors.new(errors.TIMEOUT, ("the revoke may not be sent before paid_at + %d s, "
          .. "which is past deadline_ms"):format(MIN_AGE)))
      end
      self:_log("info", "waiting before revoke (15 s after payment)", { ms = wait })
      self:_sleep(wait)
    end
  end

  local last_err, bad_sig = nil, 0
  local backoff = 500
  while true do
    local left = deadline - monotonic_ms()
    if left < MIN_ATTEMPT_MS then break end -- too little time left to be worth a request
    attempts = attempts + 1
    self:_log("info", "revoke attempt", { attempt = attempts, out_trade_no = fields.out_trade_no,
      transaction_id = fields.transaction_id })
    local ok, err = self:_revoke(kind, id, sub, { timeout_ms = left })
    if ok then
      -- the revoke was verified; ask which final state it produced
      local left2 = deadline - monotonic_ms()
      local order, qerr = self:_query(kind, id, sub, { timeout_ms = math.max(left2, 1000) })
      local state = order and FINAL[order.trade_state]
      if state then
        return state, { confirmed = true, attempts = attempts, order = order }
      end
      self:_log("warn", "revoke succeeded but the final state is unconfirmed",
        { code = qerr and qerr.code, trade_state = order and order.trade_state })
      return "REVOKED", { confirmed = false, attempts = attempts, query_error = qerr,
        trade_state = order and order.trade_state }
    end
    last_err = err
    self:_log("warn", "revoke failed", { attempt = attempts, code = err.code, status = err.status,
      request_id = err.request_id, verified = err.verified })
    if err.code == errors.BAD_SIGNATURE then bad_sig = bad_sig + 1 end
    local unverified = err.verified == false or err.code == errors.BAD_SIGNATURE
      or err.code == errors.BAD_RESPONSE
    if (GIVE_UP[err.code] and err.verified ~= false) or bad_sig >= 2 then
      return fail(err)
    end
    if not (err.retryable or unverified) then return fail(err) end
    -- the revoke may or may not have happened: ask before sending it again
    local qleft = deadline - monotonic_ms()
    if qleft <= 0 then break end
    local order = self:_query(kind, id, sub, { timeout_ms = qleft })
    local state = order and FINAL[order.trade_state]
    if state then
      return state, { confirmed = true, attempts = attempts, order = order }
    end
    local pause = backoff * (0.5 + math.random() * 0.5)
    backoff = math.min(backoff * 2, 8000)
    if monotonic_ms() + pause >= deadline then break end
    self:_log("info", "retrying revoke", { after_ms = pause, attempt = attempts + 1 })
    self:_sleep(pause)
  end
  last_err = last_err or errors.new(errors.TIMEOUT, "deadline_ms passed before the order was final")
  if last_err.code ~= errors.TIMEOUT then
    last_err.message = last_err.message .. " (deadline_ms passed)"
  end
  return fail(last_err)
end

-------------------------------------------------------------------------------
-- revoke_many: many orders at once
-------------------------------------------------------------------------------

--- client:revoke_many(list, {concurrency = 16, cancel = false, progress = fn})
-- -> results in input order: true (or "REVOKED"/"CLOSED" with cancel) or the error.
-- Every item is validated before anything is sent; an invalid one gets its
-- INVALID_ARGUMENT error and the others still run.
function Client:revoke_many(list, opts)
  if type(list) ~= "table" then util.raise("client:revoke_many expects a list of call tables") end
  if opts ~= nil and type(opts) ~= "table" then util.raise("revoke_many options must be a table") end
  opts = opts or {}
  util.check_fields(opts, { concurrency = true, cancel = true, progress = true }, "revoke_many options", 2)
  local c = opts.concurrency or 16
  if type(c) ~= "number" or c < 1 or c > 64 or c % 1 ~= 0 then
    util.raise("concurrency must be a whole number from 1 to 64")
  end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then util.raise("progress must be a function") end
  check_open(self)
  local jobs = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" then util.raise(("revoke_many item %d must be a table"):format(i)) end
    if opts.cancel then
      local kind, err = self:_order_args(item, "cancel", CANCEL_FIELDS)
      jobs[i] = kind and { call = item } or { err = err }
    else
      local kind, id, sub = self:_order_args(item, "revoke")
      jobs[i] = kind and { kind = kind, id = id, sub = sub } or { err = id }
    end
  end
  local ok, kerr = self:_ensure_keys()
  if not ok then
    local out = {}
    for i, j in ipairs(jobs) do out[i] = j.err or kerr end
    return out
  end
  local one
  if opts.cancel then
    one = function(j) if j.err then return nil, j.err end return self:cancel(j.call) end
  else
    one = function(j) if j.err then return nil, j.err end return self:_revoke(j.kind, j.id, j.sub) end
  end
  return require("wxpay.batch").run(self, jobs, { concurrency = c, progress = opts.progress }, one)
end

-------------------------------------------------------------------------------
-- Lifetime and printing
-------------------------------------------------------------------------------

function Client:close()
  local s = secrets[self]
  if not s or not s.key then return end
  s.key:close()
  s.key = nil
  s.apiv3_key = nil
  if self._curl then self._curl.close() end
  if self._multi then self._multi:close() end
  self._multi = nil
  if self._cosocket and self._cosocket.close then self._cosocket.close() end
  self._curl, self._cosocket = nil, nil
  self.keys:close()
end

Client.__gc = Client.close
Client.__close = Client.close

function Client:__tostring()
  local closed = not (secrets[self] and secrets[self].key)
  local id = self.mode == "common" and ("mchid=" .. self.mchid)
    or ("sp_mchid=" .. self.sp_mchid .. (self.sub_mchid and (", sub_mchid=" .. self.sub_mchid) or ""))
  return ("wxpay.Client{mode=%s, %s, base_url=%s%s}"):format(self.mode, id, self.base_urls[1],
    closed and ", closed" or "")
end

M.Client = Client
return M
