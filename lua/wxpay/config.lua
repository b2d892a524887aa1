--- wxpay.new's options: validation, defaults, config files, and loading the
-- keys and certificates they name (once, here).
-- Must not: send anything, or put key material in an error message.
local core = require "wxpay.core"
local util = require "wxpay.util"
local transport = require "wxpay.transport"
local KeyStore = require "wxpay.keystore"
local Pace = require "wxpay.pace"

local M = {}

local DEFAULT_BASE_URL = "https://apihk.mch.weixin.qq.com"

local lua_version = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
local USER_AGENT = ("wxpay/%s (%s; libcurl/%s)"):format(core._VERSION, lua_version, core.curl_version)

local OPTIONS = {
  mchid = "string", sp_mchid = "string", sub_mchid = "string", serial_no = "string",
  private_key = "string", platform_certs = "table", public_key = "string",
  public_key_id = "string", apiv3_key = "string", base_url = "string",
  backup_urls = "table", ca_file = "string", timeout_ms = "number",
  connect_timeout_ms = "number", transport = "string|function", user_agent = "string",
  logger = "function", max_body_bytes = "number",
}
OPTIONS.rate = "number|boolean"   -- revoke requests per second (docs/batches.md)
OPTIONS.shared_dict = OPTIONS.shared_dict or "string"

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
  local rate, rerr = Pace.check_rate(opts.rate)
  if rate == nil then return util.config_error(rerr) end
  o.rate = rate
  if opts.shared_dict ~= nil and not opts.shared_dict:match("^[%w_%-]+$") then
    return util.config_error("shared_dict must be the name of a lua_shared_dict")
  end
  o.shared_dict = opts.shared_dict
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

--- Options from a config file: JSON (text starting with "{") or Lua returning
-- a table, evaluated with no globals.  Paths inside are relative to the file.
function M.load_config(path)
  local text, err = util.read_file(path)
  if not text then return nil, "cannot read the config file: " .. tostring(err) end
  local cfg
  if text:match("^%s*{") then
    cfg = util.json_decode(text)
    if type(cfg) ~= "table" then return nil, "the config file " .. path .. " is not valid JSON" end
  else
    local chunk, lerr
    local setfenv = rawget(_G, "setfenv")
    if setfenv then  -- Lua 5.1 / LuaJIT
      chunk, lerr = rawget(_G, "loadstring")(text, "=" .. path)
      if chunk then setfenv(chunk, {}) end
    else
      chunk, lerr = load(text, "=" .. path, "t", {})
    end
    -- drop Lua's "near '<token>'": the token may be an inline PEM key
    if not chunk then return nil, "the config file is not valid Lua: " .. (tostring(lerr):gsub(" near .*$", "")) end
    local ok, res = pcall(chunk)
    if not ok or type(res) ~= "table" then
      return nil, "the config file " .. path .. " must return a table"
    end
    cfg = res
  end
  -- paths inside the file are relative to the file
  local dir = util.dirname(path)
  local function rel(p)
    if type(p) == "string" and not p:find("-----BEGIN", 1, true) and p:sub(1, 1) ~= "/" then
      return dir .. "/" .. p
    end
    return p
  end
  cfg.private_key = rel(cfg.private_key)
  cfg.public_key = rel(cfg.public_key)
  cfg.ca_file = rel(cfg.ca_file)
  if type(cfg.platform_certs) == "string" then cfg.platform_certs = { cfg.platform_certs } end
  if type(cfg.platform_certs) == "table" then
    for i, p in ipairs(cfg.platform_certs) do cfg.platform_certs[i] = rel(p) end
  end
  return cfg
end

--- Validates `opts` (a table, or a config file path) and loads the keys.
-- Returns settings, secrets {key, apiv3_key}, key store; or nil, CONFIG_ERROR.
function M.load(opts)
  if type(opts) == "string" then
    local cfg, err = M.load_config(opts)
    if not cfg then return util.config_error(err) end
    opts = cfg
  elseif type(opts) ~= "table" then
    util.raise("wxpay.new expects a table of options or a config file path, got " .. type(opts), 3)
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

  return o, { key = key, apiv3_key = opts.apiv3_key }, store
end

return M
