--- The wxpay command's arguments: the option table (help texts: cli/help.lua),
-- parsing argv, and layering the configuration (file < environment < flags).
-- Must not: print anything (it raises Failures for cli.lua to report) or
-- show a secret value.
local util = require "wxpay.util"
local output = require "wxpay.cli.output"

local M = {}
local STATES = output.STATES
local usage_error, config_error, exists, is_pem =
  output.usage_error, output.config_error, output.exists, output.is_pem

local help = require "wxpay.cli.help"
M.USAGE, M.COMMAND_HELP = help.USAGE, help.COMMAND_HELP


local COMMANDS = { revoke = true, query = true, cancel = true, certificates = true, config = true,
  help = true, notification = true }
local ORDER_COMMANDS = { revoke = true, query = true, cancel = true }

-- Configuration values: option key, environment variable, flag.
local CONFIG = {
  { key = "mchid", env = "WXPAY_MCHID", flag = "--mchid" },
  { key = "sp_mchid", env = "WXPAY_SP_MCHID", flag = "--sp-mchid" },
  { key = "sub_mchid", env = "WXPAY_SUB_MCHID" },
  { key = "serial_no", env = "WXPAY_SERIAL_NO", flag = "--serial-no" },
  { key = "private_key", env = "WXPAY_PRIVATE_KEY", flag = "--private-key" },
  { key = "platform_certs", env = "WXPAY_PLATFORM_CERT", flag = "--platform-cert", list = true },
  { key = "public_key", env = "WXPAY_PUBLIC_KEY", flag = "--public-key" },
  { key = "public_key_id", env = "WXPAY_PUBLIC_KEY_ID", flag = "--public-key-id" },
  { key = "apiv3_key", env = "WXPAY_APIV3_KEY", flag = "--apiv3-key-file", from_file = true },
  { key = "base_url", env = "WXPAY_BASE_URL", flag = "--base-url" },
  { key = "ca_file", env = "WXPAY_CA_FILE", flag = "--ca-file" },
  { key = "timeout_ms", env = "WXPAY_TIMEOUT_MS", flag = "--timeout-ms", number = true },
  { key = "cache_dir", env = "WXPAY_CACHE_DIR", flag = "--cache-dir" },
}

-- Command-line options: name -> { field, takes a value?, commands it is for }
local OPTIONS = {
  ["--help"] = { "help" }, ["-h"] = { "help" },
  ["--version"] = { "version" }, ["-V"] = { "version" },
  ["--json"] = { "json" },
  ["--verbose"] = { "verbose" }, ["-v"] = { "verbose" },
  ["--config"] = { "config", true },
  ["--sandbox"] = { "sandbox" },
  ["--no-cache"] = { "no_cache" },
  ["--seed"] = { "seed", true, ORDER_COMMANDS },
  ["--out-trade-no"] = { "out_trade_no", true, ORDER_COMMANDS },
  ["--transaction-id"] = { "transaction_id", true, ORDER_COMMANDS },
  ["--sub-mchid"] = { "sub_mchid", true, ORDER_COMMANDS },
  ["--paid-at"] = { "paid_at", true, { cancel = true } },
  ["--deadline-ms"] = { "deadline_ms", true, { cancel = true } },
  ["--headers"] = { "headers_file", true, { notification = true } },
  ["--body"] = { "body_file", true, { notification = true } },
}
for _, c in ipairs(CONFIG) do
  if c.flag then OPTIONS[c.flag] = { "cfg:" .. c.key, true } end
end
-- Arguments
-------------------------------------------------------------------------------

--- Parses argv into a table; raises a usage Failure.
function M.parse(argv)
  local a = { cfg = {}, cfg_flag = {}, platform_certs = nil }
  local positional = {}
  local i, n = 1, #argv
  local only_positional = false
  while i <= n do
    local s = argv[i]
    if only_positional or s == "-" or s:sub(1, 1) ~= "-" then
      positional[#positional + 1] = s
    elseif s == "--" then
      only_positional = true
    else
      local name, value = s:match("^(%-%-[%w%-]+)=(.*)$")
      name = name or s
      local spec = OPTIONS[name]
      if not spec then
        usage_error("unknown option " .. (name:match("^%-%-?[%w%-]*$") and name or "(not printable)"))
      end
      local field, takes = spec[1], spec[2]
      if takes then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then usage_error(name .. " needs a value") end
        end
      elseif value ~= nil then
        usage_error(name .. " takes no value")
      end
      if spec[3] then a.scoped = a.scoped or {}; a.scoped[#a.scoped + 1] = { name, spec[3] } end
      local key = field:match("^cfg:(.*)$")
      if key == "platform_certs" then
        a.cfg.platform_certs = a.cfg.platform_certs or {}
        table.insert(a.cfg.platform_certs, value)
        a.cfg_flag[key] = name
      elseif key then
        a.cfg[key] = value
        a.cfg_flag[key] = name
      elseif takes then
        a[field] = value
      else
        a[field] = true
      end
    end
    i = i + 1
  end
  a.command = positional[1]
  if a.command == "help" then
    a.help, a.command = true, positional[2]
    if positional[3] then usage_error("unexpected argument " .. ("%q"):format(positional[3])) end
  elseif positional[2] then
    usage_error("unexpected argument " .. ("%q"):format(positional[2]), a.command)
  end
  if a.command and not COMMANDS[a.command] then
    usage_error("unknown command " .. ("%q"):format(a.command))
  end
  return a
end

local function check_args(a)
  local cmd = a.command
  for _, s in ipairs(a.scoped or {}) do
    if not s[2][cmd] then
      local list = {}
      for c in pairs(s[2]) do list[#list + 1] = c end
      table.sort(list)
      usage_error(("%s is only for %s"):format(s[1], table.concat(list, ", ")), cmd)
    end
  end
  if ORDER_COMMANDS[cmd] then
    if a.out_trade_no and a.transaction_id then
      usage_error("give --out-trade-no or --transaction-id, not both", cmd)
    end
    if not (a.out_trade_no or a.transaction_id) then
      usage_error(cmd .. " needs --out-trade-no NO or --transaction-id ID", cmd)
    end
  end
  if (a.headers_file == nil) ~= (a.body_file == nil) then
    usage_error("give both --headers FILE and --body FILE, or the whole request on stdin", cmd)
  end
  if a.paid_at then
    if not a.paid_at:match("^%d+$") or #a.paid_at > 12 then
      usage_error("--paid-at must be Unix seconds (digits)", cmd)
    end
    a.paid_at = tonumber(a.paid_at)
  end
  if a.deadline_ms then
    if not a.deadline_ms:match("^%d+$") or #a.deadline_ms > 10 or tonumber(a.deadline_ms) == 0 then
      usage_error("--deadline-ms must be a positive number of milliseconds", cmd)
    end
    a.deadline_ms = tonumber(a.deadline_ms)
  end
  if a.seed then
    if not a.sandbox then usage_error("--seed needs --sandbox", cmd) end
    if not STATES[a.seed] then
      usage_error("--seed must be one of SUCCESS NOTPAY USERPAYING PAYERROR CLOSED REVOKED REFUND", cmd)
    end
  end
end

-------------------------------------------------------------------------------
-- Configuration: file < environment < flags
-------------------------------------------------------------------------------

--- Loads a JSON or Lua config file exactly as wxpay.new(path) does (relative
-- paths inside it are relative to the file).
function M.load_config_file(path)
  return require("wxpay.config").load_config(path) -- loads the C core: only when needed
end

local function default_config_path(getenv)
  local xdg = getenv("XDG_CONFIG_HOME")
  local home = getenv("HOME")
  local base = (xdg and xdg ~= "") and xdg or (home and home ~= "" and home .. "/.config")
  if not base then return nil end
  local p = base .. "/wxpay/config"
  if exists(p) then return p end
  return nil
end

--- The default certificate cache: $XDG_CACHE_HOME/wxpay, else ~/.cache/wxpay.
function M.default_cache_dir(getenv)
  local xdg = getenv("XDG_CACHE_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/wxpay" end
  local home = getenv("HOME")
  if home and home ~= "" then return home .. "/.cache/wxpay" end
  return nil
end

-- One layer over the options so far.  Choosing a mode in a higher layer
-- drops the other mode's ids from the lower ones.
local function apply_layer(opts, source, layer, label)
  if layer.mchid ~= nil then
    opts.sp_mchid, opts.sub_mchid, source.sp_mchid, source.sub_mchid = nil, nil, nil, nil
  elseif layer.sp_mchid ~= nil then
    opts.mchid, source.mchid = nil, nil
  end
  for k, v in pairs(layer) do
    opts[k] = v
    source[k] = type(label) == "function" and label(k) or label
  end
end

--- Builds the wxpay.new options.  Returns opts, sources, file path.
function M.configure(a, getenv, sandbox_cfg)
  local opts, source = {}, {}
  local path
  if sandbox_cfg then
    apply_layer(opts, source, sandbox_cfg, "sandbox")
  else
    path = a.config or getenv("WXPAY_CONFIG")
    if path == "" then path = nil end
    if path then
      if not exists(path) then
        config_error("cannot read the config file " .. path .. (a.config and " (--config)" or " ($WXPAY_CONFIG)"))
      end
    else
      path = default_config_path(getenv)
    end
    if path then
      local cfg, err = M.load_config_file(path)
      if not cfg then config_error(err) end
      apply_layer(opts, source, cfg, "file " .. path)
    end
    local env = {}
    local env_name = {}
    for _, c in ipairs(CONFIG) do
      local v = getenv(c.env)
      if v ~= nil and v ~= "" then
        if c.list then
          local list = {}
          for p in v:gmatch("[^:]+") do list[#list + 1] = p end
          v = list
        elseif c.number then
          if not v:match("^%d+$") or #v > 10 then config_error(c.env .. " must be a whole number") end
          v = tonumber(v)
        end
        env[c.key], env_name[c.key] = v, c.env
      end
    end
    apply_layer(opts, source, env, function(k) return "env " .. env_name[k] end)
  end
  local flags = {}
  for _, c in ipairs(CONFIG) do
    local v = a.cfg[c.key]
    if v ~= nil then
      if c.from_file then
        -- never echo the argument: it may be the key itself, given by mistake
        local data, err = util.read_file(v)
        if not data then
          local reason = tostring(err):match(": ([^:]*)$") or "cannot be read"
          config_error(("cannot read the file given to %s (its name is not shown: it may be the "
            .. "key itself): %s"):format(c.flag, reason))
        end
        require("wxpay.config").warn_exposed(v, "the file given to " .. c.flag)
        v = data:gsub("%s+$", "")
      elseif c.number then
        if not v:match("^%d+$") or #v > 10 then config_error(c.flag .. " must be a whole number") end
        v = tonumber(v)
      end
      flags[c.key] = v
    end
  end
  apply_layer(opts, source, flags, function(k) return "flag " .. a.cfg_flag[k] end)
  return opts, source, path
end

-- A value as it may be shown: never the APIv3 key or PEM text.
function M.show_value(k, v)
  if k == "apiv3_key" then
    return type(v) == "string" and ("(hidden, %d bytes)"):format(#v) or "(hidden)"
  end
  if k == "proxy" and type(v) == "string" then v = v:gsub("//[^/]*@", "//(credentials hidden)@") end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = M.show_value(k, x) end
    return table.concat(parts, ", ")
  end
  if type(v) == "string" then
    if is_pem(v) then return "(PEM text)" end
    if #v > 200 or v:find("[%c]") then return ("(%d bytes)"):format(#v) end
    return v
  end
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  return "(" .. type(v) .. ")"
end

M.check_args, M.COMMANDS = check_args, COMMANDS

return M
