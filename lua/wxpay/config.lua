--- wxpay.new's options: validation, defaults, config files, and loading the
-- keys and certificates they name (once, here).
-- Must not: send anything, or put key material in an error message.
local core = require "wxpay.core"
local util = require "wxpay.util"
local transport = require "wxpay.transport"
local KeyStore = require "wxpay.keystore"
local escape = require("wxpay.errors").escape
local Pace = require "wxpay.pace"

local M = {}

local DEFAULT_BASE_URL = "https://apihk.mch.weixin.qq.com"

local lua_version = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
local USER_AGENT = ("wxpay/%s (%s; libcurl/%s)"):format(core._VERSION, lua_version, core.curl_version)

local OPTIONS = {
  mchid = "string|number", sp_mchid = "string|number", sub_mchid = "string|number", serial_no = "string",
  private_key = "string", platform_certs = "table|string", public_key = "string",
  public_key_id = "string", apiv3_key = "string", base_url = "string",
  backup_urls = "table", ca_file = "string", timeout_ms = "number",
  connect_timeout_ms = "number", transport = "string|function", user_agent = "string",
  logger = "function", max_body_bytes = "number", proxy = "string",
  shared_dict = "string", cache_dir = "string",
}
M.OPTIONS = OPTIONS -- name -> accepted Lua types (spec/docs_spec.lua checks docs/api.md covers them)

-- Merchant ids are strings inside; a config file may hold them as JSON numbers.
local function id_string(v, name)
  if type(v) ~= "number" then return v end
  if v ~= v or v < 1 or v >= 2 ^ 53 or v % 1 ~= 0 then
    return nil, name .. " must be digits (a string, or a whole number)"
  end
  return ("%.0f"):format(v)
end

-- proxy: "env" (libcurl reads HTTPS_PROXY/ALL_PROXY/NO_PROXY) or one URL;
-- without the option the environment's proxy variables are ignored.
local function check_proxy(p)
  if p == "env" then return p end
  if #p > 2048 or p:find("[%s%c]") then return nil, "proxy must be a URL without spaces or control bytes" end
  local scheme, rest = p:match("^(%a[%w+.-]*)://(.+)$")
  scheme = scheme and scheme:lower()
  if not (scheme == "http" or scheme == "https" or scheme == "socks5" or scheme == "socks5h") then
    return nil, 'proxy must be "env" or an http://, https:// or socks5:// URL'
  end
  local host = rest:gsub("^[^@/]*@", ""):match("^([^/:]+)") or rest:match("^(%[[%x:]+%])")
  if not host or host == "" then return nil, "proxy URL has no host" end
  return p
end
OPTIONS.rate = "number|boolean"   -- revoke requests per second (docs/batches.md)

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
  local ids = {}
  for _, k in ipairs { "mchid", "sp_mchid", "sub_mchid" } do
    local v, ierr = id_string(opts[k], k)
    if ierr then return util.config_error(ierr) end
    ids[k] = v
  end
  opts = setmetatable(ids, { __index = opts })
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
  if opts.serial_no == nil then
    return util.config_error("missing serial_no (the merchant API certificate's serial, hex)")
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
  if opts.proxy ~= nil then
    local p, perr = check_proxy(opts.proxy)
    if not p then return util.config_error(perr) end
    o.proxy = p
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
  -- where downloaded certificates are shared (docs/scaling.md)
  -- shared_dict: every worker shares the pace (wxpay.pace), the notification
  -- seen-ids and, with apiv3_key, the certificate download; cache_dir only the
  -- download, so it needs apiv3_key.
  if opts.cache_dir and not opts.apiv3_key then
    return util.config_error("cache_dir keeps downloaded certificates: it needs apiv3_key")
  end
  if opts.shared_dict or opts.cache_dir then
    local certcache = require "wxpay.certcache"
    local name = certcache.name(o.auth_mchid, o.base_urls[1])
    o.cert_stores = {}
    if opts.shared_dict then
      local dict, derr = certcache.check_dict(opts.shared_dict)
      if not dict then return util.config_error(derr) end
      if opts.apiv3_key then
        o.cert_stores.dict = certcache.dict(dict, opts.shared_dict, name)
        o.cert_stores[1] = o.cert_stores.dict
      end
    end
    if opts.cache_dir then
      local ok, derr = certcache.check_dir(opts.cache_dir)
      if not ok then return util.config_error(derr) end
      o.cert_stores[#o.cert_stores + 1] = certcache.dir(opts.cache_dir, name)
    end
    if #o.cert_stores == 0 then o.cert_stores = nil end
  end
  return o
end

--- Warns (through `log` when given, else on stderr) when a file holding key
-- material is open to group or others.  Says which file, never what is in it.
function M.warn_exposed(path, what, log)
  local mode = core.file_mode(path)
  if mode and mode % 64 ~= 0 then -- any bit for group or others
    local shown = util.show_path(path)
    local msg = ("%s %s is readable by group/others (mode %o): chmod 600 it"):format(what, shown, mode)
    if log and pcall(log, "warn", msg, { path = shown }) then
      return true
    else
      io.stderr:write("wxpay: warning: ", escape(msg), "\n")
    end
    return true
  end
  return false
end

--- wxpay.new(opts | config_path) -> client | nil, err

--- Options from a config file: JSON (text starting with "{") or Lua returning
-- a table, evaluated with no globals.  Paths inside are relative to the file.
function M.load_config(path, log)
  local text, err = util.read_file(path)
  if not text then return nil, "cannot read the config file: " .. tostring(err) end
  local cfg
  if text:sub(1, 1) == "\27" then
    -- precompiled bytecode (LuaJIT does not verify it: no sandbox holds it)
    return nil, "the config file " .. util.show_path(path) .. " is a precompiled Lua chunk: "
      .. "only JSON or Lua source is accepted"
  end
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
  -- key material kept in the file itself: the file must be private
  if (type(cfg.private_key) == "string" and cfg.private_key:find("-----BEGIN", 1, true))
    or cfg.apiv3_key ~= nil then
    M.warn_exposed(path, "config file (it holds key material)",
      log or (type(cfg.logger) == "function" and cfg.logger or nil))
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
  cfg.cache_dir = rel(cfg.cache_dir)
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

  local key, kerr
  if not opts.private_key:find("-----BEGIN", 1, true) and core.load_private_key_file then
    -- a path: read and parsed in C, the file's bytes cleansed there
    local rerr = util.read_file_error(opts.private_key)
    if rerr then return util.config_error("private_key is not readable: " .. rerr) end
    key, kerr = core.load_private_key_file(opts.private_key)
    if not key then
      kerr = tostring(kerr)
      local p = opts.private_key
      if kerr:sub(1, #p + 2) == p .. ": " then kerr = util.show_path(p) .. kerr:sub(#p + 1) end
      return util.config_error("private_key: " .. kerr)
    end
    M.warn_exposed(opts.private_key, "private key file", o.logger)
  else
    local pem, path, rerr = util.pem_or_path(opts.private_key)
    if not pem then return util.config_error("private_key is not readable: " .. tostring(rerr)) end
    key, kerr = core.load_private_key(pem)
    if not key then return util.config_error("private_key: " .. kerr) end
    if path then M.warn_exposed(path, "private key file", o.logger) end
  end

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
