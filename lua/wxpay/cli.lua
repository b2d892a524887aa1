--- The `wxpay` command: revoke, query and cancel orders by hand (docs/cli.md).
--
--   local cli = require "wxpay.cli"
--   os.exit(cli.main(arg, { root = "/path/to/checkout" }))   -- root: for --sandbox
--
-- Exit status: 0 done, 1 API or network failure, 2 usage or configuration error.
-- Nothing here ever prints key material or the APIv3 key.
local cjson = require "cjson.safe"
local util = require "wxpay.util"

local M = {}

local PROGRAM = "wxpay"
local EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2

M.USAGE = [[
Usage: wxpay [OPTIONS] COMMAND [COMMAND OPTIONS]

Revoke, query and cancel WeChat Pay Global quick-pay orders (API v3) by hand.

Commands:
  revoke         send one Revoke Order call, then show the order's state
  query          show an order's state
  cancel         drive an order whose payment failed or is unknown to REVOKED
                 or CLOSED: waits, retries and confirms (like client:cancel)
  certificates   list the platform certificates/keys answers are verified with
  config         check the configuration and show where each value came from
  help [COMMAND] this text, or a command's

Order (revoke, query, cancel):
  --out-trade-no NO       the merchant's order number
  --transaction-id ID     WeChat Pay's order number
  --sub-mchid ID          sub-merchant (institutional mode)
cancel only:
  --paid-at UNIX          when the payment call was made (Unix seconds): the
                          revoke is not sent sooner than 15 s after it
  --deadline-ms N         give up after N ms (default 60000)

Configuration (flags override the environment, which overrides the file):
  --config FILE           JSON or Lua file (default: $WXPAY_CONFIG, else
                          ~/.config/wxpay/config when it exists)
  --mchid ID              WXPAY_MCHID          merchant id (common mode)
  --sp-mchid ID           WXPAY_SP_MCHID       institution's merchant id
                          WXPAY_SUB_MCHID      default sub-merchant
  --serial-no HEX         WXPAY_SERIAL_NO      merchant API certificate serial
  --private-key FILE      WXPAY_PRIVATE_KEY    apiclient_key.pem
  --platform-cert FILE    WXPAY_PLATFORM_CERT  repeatable (env: FILE:FILE...)
  --public-key FILE       WXPAY_PUBLIC_KEY     WeChat Pay public key
  --public-key-id ID      WXPAY_PUBLIC_KEY_ID  its PUB_KEY_ID_...
  --apiv3-key-file FILE   WXPAY_APIV3_KEY      (the variable holds the key)
  --base-url URL          WXPAY_BASE_URL       default https://apihk.mch.weixin.qq.com
  --ca-file FILE          WXPAY_CA_FILE        CA bundle for the server
  --timeout-ms N          WXPAY_TIMEOUT_MS     whole-request limit

Output:
  --json                  one JSON object on stdout, also on failure
  -v, --verbose           log every request on stderr
  -h, --help              this help; 'wxpay COMMAND --help' for a command
  -V, --version           print the version

Sandbox (from a source checkout only):
  --sandbox               run against a local sandbox started for this command
  --seed STATE            with --sandbox: first create the order in STATE
                          (SUCCESS NOTPAY USERPAYING PAYERROR CLOSED REVOKED REFUND)

Order states: REVOKED = the customer was refunded, CLOSED = never charged.
Exit status: 0 done, 1 API or network failure, 2 usage or configuration error.
]]

local ORDER_USAGE = "(--out-trade-no NO | --transaction-id ID) [--sub-mchid ID]"
local GLOBAL_NOTE = "\nConfiguration, --json, --sandbox and the other global options: see 'wxpay --help'.\n"

M.COMMAND_HELP = {
  revoke = "Usage: wxpay revoke " .. ORDER_USAGE .. [[


Sends one Revoke Order call (POST .../reverse).  When WeChat Pay accepts it
(HTTP 204) the order becomes REVOKED if it was paid (the customer is refunded)
or CLOSED if it was not (never charged); wxpay then queries the order to show
which.  Only orders of the last 7 days can be revoked, and not sooner than 15 s
after the payment call: 'wxpay cancel --paid-at' waits and retries for you.
]] .. GLOBAL_NOTE,
  query = "Usage: wxpay query " .. ORDER_USAGE .. [[


Shows the order's trade_state (SUCCESS, NOTPAY, USERPAYING, PAYERROR, CLOSED,
REVOKED, REFUND), what it means for the customer, the amount and the ids.
]] .. GLOBAL_NOTE,
  cancel = "Usage: wxpay cancel " .. ORDER_USAGE .. [[ [--paid-at UNIX] [--deadline-ms N]

Drives an order whose payment failed or whose outcome is unknown to a final
state, following WeChat Pay's guidance: not sooner than 15 s after --paid-at
(without it wxpay does not wait), never past the 7-day window, retrying
retryable failures with backoff and querying to confirm.  Progress goes to
stderr, one line per attempt.  Ends with REVOKED (the customer was refunded)
or CLOSED (never charged).

  --paid-at UNIX      when the payment call was made (Unix seconds)
  --deadline-ms N     give up after N milliseconds (default 60000)
]] .. GLOBAL_NOTE,
  certificates = [[
Usage: wxpay certificates

Lists the keys answers are verified with: serial, source (config, download or
public_key) and validity.  With an APIv3 key, downloads the platform
certificates first.
]] .. GLOBAL_NOTE,
  config = [[
Usage: wxpay config

Checks the configuration without sending anything (exit 2 when wxpay.new
refuses it) and shows each value and where it came from (flag, environment,
file).  The APIv3 key and private key contents are never shown.
]] .. GLOBAL_NOTE,
}
M.COMMAND_HELP.help = M.USAGE

local COMMANDS = { revoke = true, query = true, cancel = true, certificates = true, config = true,
  help = true }
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
}

-- Command-line options: name -> { field, takes a value?, commands it is for }
local OPTIONS = {
  ["--help"] = { "help" }, ["-h"] = { "help" },
  ["--version"] = { "version" }, ["-V"] = { "version" },
  ["--json"] = { "json" },
  ["--verbose"] = { "verbose" }, ["-v"] = { "verbose" },
  ["--config"] = { "config", true },
  ["--sandbox"] = { "sandbox" },
  ["--seed"] = { "seed", true, ORDER_COMMANDS },
  ["--out-trade-no"] = { "out_trade_no", true, ORDER_COMMANDS },
  ["--transaction-id"] = { "transaction_id", true, ORDER_COMMANDS },
  ["--sub-mchid"] = { "sub_mchid", true, ORDER_COMMANDS },
  ["--paid-at"] = { "paid_at", true, { cancel = true } },
  ["--deadline-ms"] = { "deadline_ms", true, { cancel = true } },
}
for _, c in ipairs(CONFIG) do
  if c.flag then OPTIONS[c.flag] = { "cfg:" .. c.key, true } end
end

local STATES = {
  SUCCESS = "paid: the customer was charged (a revoke within 7 days refunds them)",
  REFUND = "refunded (wholly or in part): it can no longer be revoked",
  NOTPAY = "not paid",
  USERPAYING = "the customer is still paying (entering the password)",
  PAYERROR = "the payment failed",
  CLOSED = "closed: the customer was never charged",
  REVOKED = "revoked: the customer was refunded",
}
M.STATES = STATES

-------------------------------------------------------------------------------
-- Small helpers
-------------------------------------------------------------------------------

-- A failure that ends the command: exit status, code, message.
local Failure = {}
Failure.__index = Failure

local function fail(exit, code, message, extra)
  local f = setmetatable(extra or {}, Failure)
  f.exit, f.code, f.message = exit, code, message
  error(f, 0)
end

local function usage_error(message, command)
  fail(EXIT_USAGE, "USAGE_ERROR", message, { command = command, usage = true })
end

local function config_error(message)
  fail(EXIT_USAGE, "CONFIG_ERROR", message)
end

local function json_encode(v)
  local s = cjson.encode(v)
  if not s then return '{"ok":false}' end
  return (s:gsub("\\/", "/"))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; returns its output, success and exit code.  The
-- code is echoed by the shell: LuaJIT's popen close always says true.
function M.sh(cmd)
  local p = io.popen("{ " .. cmd .. "\n}; echo \"__rc=$?\"", "r")
  if not p then return "", false, -1 end
  local out = p:read("*a") or ""
  p:close()
  local body, code = out:match("^(.-)__rc=(%d+)\n?$")
  code = tonumber(code) or -1
  return body or out, code == 0, code
end
local sh = M.sh

-- 100.0 (cjson decodes every number as a float) prints as 100
local function num(v)
  if type(v) == "number" and v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then return ("%d"):format(v) end
  return tostring(v)
end

local function is_pem(v)
  return type(v) == "string" and v:find("-----BEGIN", 1, true) ~= nil
end

-- days since 1970-01-01 of a civil date (UTC)
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local floor = math.floor
  local era = floor((y >= 0 and y or y - 399) / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  if not y then return nil end
  return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

-------------------------------------------------------------------------------
-- Output (everything written goes through redact)
-------------------------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:secret(s)
  if type(s) == "string" and #s >= 8 then self.secrets[#self.secrets + 1] = s end
end

-- Never let key material through, whatever a message holds.
function Ctx:redact(s)
  s = tostring(s)
  for _, secret in ipairs(self.secrets) do
    local i = 1
    while true do
      local a, b = s:find(secret, i, true)
      if not a then break end
      s = s:sub(1, a - 1) .. "[redacted]" .. s:sub(b + 1)
      i = a + 10
    end
  end
  return s
end

function Ctx:out(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = self:redact(parts[i]) end
  io.stdout:write(table.concat(parts))
end

function Ctx:err(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = self:redact(parts[i]) end
  io.stderr:write(table.concat(parts))
  io.stderr:flush()
end

function Ctx:emit_json(obj)
  self:out(json_encode(obj), "\n")
end

-------------------------------------------------------------------------------
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
  return util.load_config(path)
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
        local data, err = util.read_file(v)
        if not data then config_error(("cannot read %s %s: %s"):format(c.flag, v, tostring(err))) end
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
local function show_value(k, v)
  if k == "apiv3_key" then
    return type(v) == "string" and ("(hidden, %d bytes)"):format(#v) or "(hidden)"
  end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = show_value(k, x) end
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

-------------------------------------------------------------------------------
-- Sandbox (a checkout's sandbox/ctl)
-------------------------------------------------------------------------------

function Ctx:start_sandbox()
  local root = self.root
  if not (root and exists(root .. "/sandbox/ctl")) then
    fail(EXIT_USAGE, "SANDBOX_UNAVAILABLE", "--sandbox works only from a source checkout of wxpay "
      .. "(run its bin/wxpay): sandbox/ctl was not found beside this program")
  end
  local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/wxpay-cli-sandbox.XXXXXX\""):gsub("%s+$", "")
  if dir == "" or not dir:find("/wxpay-cli-sandbox.", 1, true) then
    fail(EXIT_API, "SANDBOX_ERROR", "cannot make a temporary directory for the sandbox")
  end
  self.sandbox_dir = dir
  -- Making the sandbox's keys takes seconds: keep one set in the checkout's
  -- (git-ignored) .sandbox/cli-creds and start from a copy of it.
  local cache = root .. "/.sandbox/cli-creds"
  local cached = exists(cache .. "/apiv3_key.txt")
    and select(2, sh(("cp -a %s %s/creds 2>/dev/null"):format(shell_quote(cache), shell_quote(dir))))
  local ctl = ("%s start %s 2>&1"):format(shell_quote(root .. "/sandbox/ctl"), shell_quote(dir))
  local out, ok = sh(ctl)
  if not ok and cached then   -- a stale cache: start afresh
    sh(("rm -rf -- %s/creds %s"):format(shell_quote(dir), shell_quote(cache)))
    out, ok = sh(ctl)
    cached = false
  end
  if ok and not cached then
    local tmp = cache .. "." .. tostring(os.time()) .. tostring(math.random(1000, 9999))
    sh(("mkdir -p %s && cp -a %s/creds %s 2>/dev/null && mv -T %s %s 2>/dev/null; rm -rf -- %s")
      :format(shell_quote(root .. "/.sandbox"), shell_quote(dir), shell_quote(tmp), shell_quote(tmp),
        shell_quote(cache), shell_quote(tmp)))
  end
  local text = util.read_file(dir .. "/sandbox.json")
  local cfg = ok and text and cjson.decode(text)
  if type(cfg) ~= "table" then
    fail(EXIT_API, "SANDBOX_ERROR", "the sandbox did not start: " .. out:gsub("%s+$", ""))
  end
  self.sandbox = cfg
  self:secret(cfg.apiv3_key)
  if self.args.verbose then self:err("wxpay: sandbox started at ", cfg.base_url, " (", dir, ")\n") end
  return cfg
end

function Ctx:stop_sandbox()
  local dir = self.sandbox_dir
  if not dir then return end
  self.sandbox_dir = nil
  -- ctl stop kills the server by the PID recorded in sandbox.json
  sh(("%s stop %s >/dev/null 2>&1"):format(shell_quote(self.root .. "/sandbox/ctl"), shell_quote(dir)))
  sh("rm -rf -- " .. shell_quote(dir))
end

-- Creates the order in the sandbox through its control endpoint (curl CLI).
function Ctx:seed(a, opts)
  local sb = self.sandbox
  local order = { out_trade_no = a.out_trade_no, transaction_id = a.transaction_id, trade_state = a.seed }
  if not order.out_trade_no then order.out_trade_no = ("SEED%d%04d"):format(os.time(), math.random(0, 9999)) end
  if a.paid_at then order.created_at = a.paid_at end
  if opts.sp_mchid then
    order.sp_mchid, order.sub_mchid = opts.sp_mchid, a.sub_mchid or opts.sub_mchid
  else
    order.mchid = opts.mchid
  end
  local body = os.tmpname()
  local f = assert(io.open(body, "wb"))
  f:write(json_encode(order))
  f:close()
  local out = sh(("curl -sS -m 10 -X POST -H 'Content-Type: application/json' --data-binary @%s "
    .. "-w '\\n%%{http_code}' %s 2>&1"):format(shell_quote(body), shell_quote(sb.control_url .. "/orders")))
  os.remove(body)
  local text, status = out:match("^(.*)\n(%d+)$")
  if status ~= "200" then
    local d = cjson.decode(text or "")
    local why = type(d) == "table" and d.error or out:gsub("%s+$", "")
    fail(EXIT_USAGE, "SANDBOX_ERROR", "the sandbox refused the seed order: " .. tostring(why))
  end
  self:err(("wxpay: sandbox: seeded order %s in state %s\n"):format(
    a.out_trade_no or ("transaction_id " .. a.transaction_id), a.seed))
end

-------------------------------------------------------------------------------
-- Logging (progress on stderr)
-------------------------------------------------------------------------------

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

function Ctx:logger(min_level)
  return function(level, message, fields)
    if (LEVELS[level] or 3) < min_level then return end
    local parts = {}
    local keys = {}
    for k in pairs(fields or {}) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = fields[k]
      local tv = type(v)
      if tv == "number" then
        parts[#parts + 1] = k .. "=" .. (v % 1 == 0 and ("%d"):format(v) or ("%.0f"):format(v))
      elseif tv == "string" or tv == "boolean" then
        parts[#parts + 1] = k .. "=" .. tostring(v)
      end
    end
    local line = "wxpay: " .. (level == "warn" and "warning: " or level == "error" and "error: " or "")
      .. tostring(message) .. (#parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "")
    self:err(line:gsub("[\r\n]", " "), "\n")
  end
end

-------------------------------------------------------------------------------
-- Reporting
-------------------------------------------------------------------------------

local function order_label(a)
  if a.out_trade_no then return "out_trade_no " .. a.out_trade_no end
  return "transaction_id " .. a.transaction_id
end

local function error_fields(err, errors)
  local info = errors.info(err.code)
  return {
    code = err.code, message = err.message, status = err.status, request_id = err.request_id,
    retryable = err.retryable, attempts = err.attempts, verified = err.verified, detail = err.detail,
    description = info.description, action = info.action,
  }
end

-- An API failure from the library: exit 1, or 2 for our own inputs.
function Ctx:api_failure(what, err)
  local errors = self.wxpay.errors
  local exit = (err.code == errors.CONFIG_ERROR or err.code == errors.INVALID_ARGUMENT) and EXIT_USAGE or EXIT_API
  fail(exit, err.code, err.message, { api = error_fields(err, errors), what = what })
end

function Ctx:print_order(order)
  local state = order.trade_state
  self:out(("  state:          %s%s\n"):format(tostring(state),
    STATES[state] and (" - " .. STATES[state]) or " (unknown state: treat as not final)"))
  local rows = {
    { "out_trade_no", order.out_trade_no }, { "transaction_id", order.id },
    { "mchid", order.mchid }, { "sp_mchid", order.sp_mchid }, { "sub_mchid", order.sub_mchid },
    { "trade_type", order.trade_type }, { "created", order.create_time },
  }
  if type(order.amount) == "table" then
    local am = order.amount
    local s = num(am.total or "?") .. " " .. tostring(am.currency or "")
    if am.payer_total then
      s = s .. (" (payer: %s %s)"):format(num(am.payer_total), tostring(am.payer_currency or ""))
    end
    rows[#rows + 1] = { "amount", s }
  end
  for _, r in ipairs(rows) do
    if type(r[2]) == "string" or type(r[2]) == "number" then
      self:out(("  %-15s %s\n"):format(r[1] .. ":", num(r[2])))
    end
  end
end

-------------------------------------------------------------------------------
-- Commands
-------------------------------------------------------------------------------

local function call_args(a)
  return { out_trade_no = a.out_trade_no, transaction_id = a.transaction_id, sub_mchid = a.sub_mchid }
end

local function state_hint(state, a)
  local id = a.out_trade_no and ("--out-trade-no " .. a.out_trade_no) or ("--transaction-id " .. a.transaction_id)
  if state == "SUCCESS" then
    return "to give the money back within 7 days: wxpay revoke " .. id
  elseif state == "NOTPAY" or state == "USERPAYING" or state == "PAYERROR" then
    return "not final: wxpay cancel " .. id .. " closes it"
  end
end

local CMD = {}

function CMD.query(ctx, client, a)
  local order, err = client:query(call_args(a))
  if not order then ctx:api_failure("query", err) end
  local state = order.trade_state
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "query", trade_state = state, meaning = STATES[state],
      final = state == "REVOKED" or state == "CLOSED", order = order }
  else
    ctx:out(("Order %s\n"):format(order_label(a)))
    ctx:print_order(order)
    local hint = state_hint(state, a)
    if hint then ctx:out("  next:           ", hint, "\n") end
  end
  return EXIT_OK
end

function CMD.revoke(ctx, client, a)
  local ok, err = client:revoke(call_args(a))
  if not ok then ctx:api_failure("revoke", err) end
  local order, qerr = client:query(call_args(a))
  local state = order and order.trade_state
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "revoke", revoked = true, trade_state = state or cjson.null,
      meaning = state and STATES[state] or cjson.null, order = order or cjson.null,
      query_error = qerr and error_fields(qerr, ctx.wxpay.errors) or nil }
  else
    ctx:out(("Revoke accepted for order %s (HTTP 204).\n"):format(order_label(a)))
    if order then
      ctx:print_order(order)
    else
      ctx:out("  state:          unknown: the follow-up query failed (", tostring(qerr), ")\n")
    end
  end
  return EXIT_OK
end

function CMD.cancel(ctx, client, a)
  local args = call_args(a)
  args.paid_at, args.deadline_ms = a.paid_at, a.deadline_ms
  local state, info = client:cancel(args)
  if not state then ctx:api_failure("cancel", info) end
  info = info or {}
  local order = info.order
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "cancel", result = state, trade_state = state,
      meaning = STATES[state], confirmed = info.confirmed == true, attempts = info.attempts,
      order = order or cjson.null }
  else
    ctx:out(("Order %s is now %s: %s.\n"):format(order_label(a), state, (STATES[state]:gsub("^[^:]*: ", ""))))
    ctx:out(("  %d revoke attempt(s); %s\n"):format(info.attempts or 0, info.confirmed
      and "the final state was confirmed by an order query"
      or "the final state could not be confirmed by a query (run wxpay query to check)"))
    if order then ctx:print_order(order) end
  end
  return EXIT_OK
end

function CMD.certificates(ctx, client)
  local list, err = client:certificates()
  if not list then ctx:api_failure("certificates", err) end
  local now = os.time()
  for _, c in ipairs(list) do
    local nb, na = parse_iso8601(c.effective_time), parse_iso8601(c.expire_time)
    if na and na < now then c.status = "expired"
    elseif nb and nb > now then c.status = "not yet valid"
    else c.status = "valid" end
    if na and na >= now then c.days_left = math.floor((na - now) / 86400) end
  end
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "certificates", count = #list, certificates = list }
    return EXIT_OK
  end
  ctx:out(("%d key(s) to verify answers with:\n"):format(#list))
  for _, c in ipairs(list) do
    local validity = c.effective_time and (c.effective_time .. " .. " .. (c.expire_time or "?")) or "no validity period"
    ctx:out(("  %s  %-10s %s  %s%s\n"):format(c.serial_no, c.source or "?", validity, c.status,
      c.days_left and (" (%d days left)"):format(c.days_left) or ""))
  end
  return EXIT_OK
end

function CMD.config(ctx, client, _, opts, source)
  local keys = {}
  for k in pairs(opts) do if k ~= "logger" then keys[#keys + 1] = k end end
  table.sort(keys)
  if ctx.args.json then
    local cfg = {}
    for _, k in ipairs(keys) do cfg[k] = { value = show_value(k, opts[k]), source = source[k] } end
    ctx:emit_json { ok = true, command = "config", client = tostring(client), config = cfg }
    return EXIT_OK
  end
  ctx:out("Configuration is usable: ", tostring(client), "\n")
  for _, k in ipairs(keys) do
    ctx:out(("  %-15s %-45s %s\n"):format(k, show_value(k, opts[k]), source[k] or ""))
  end
  return EXIT_OK
end

-------------------------------------------------------------------------------
-- main
-------------------------------------------------------------------------------

function Ctx:report_failure(f)
  local cmd = self.args and self.args.command
  if self.json then
    local e = f.api or { code = f.code, message = f.message }
    if not f.api and f.code == "CONFIG_ERROR" and self.wxpay then
      e.action = self.wxpay.errors.info("CONFIG_ERROR").action
    end
    self:emit_json { ok = false, command = cmd or cjson.null, exit_code = f.exit, error = e }
  end
  if f.usage then
    self:err(PROGRAM, ": ", f.message, "\n")
    self:err(("Try '%s%s --help'.\n"):format(PROGRAM, f.command and COMMANDS[f.command] and (" " .. f.command) or ""))
    return f.exit
  end
  if f.api then
    local e = f.api
    self:err(("%s: %s failed: %s: %s\n"):format(PROGRAM, f.what, e.code, e.message))
    if e.status then self:err("  HTTP status: ", e.status, "\n") end
    if e.request_id then self:err("  request id:  ", e.request_id, "\n") end
    if e.attempts then self:err("  attempts:    ", e.attempts, "\n") end
    if e.verified == false then self:err("  note:        the answer was not verified: do not trust it\n") end
    if e.detail then
      local d = json_encode(e.detail)
      if #d < 500 then self:err("  detail:      ", d, "\n") end
    end
    self:err("  meaning:     ", e.description, "\n")
    self:err("  advice:      ", e.action, "\n")
    return f.exit
  end
  if f.code == "CONFIG_ERROR" then
    self:err(PROGRAM, ": configuration error: ", f.message, "\n")
    if f.bare then return f.exit end
    if self.sources then self:err("  values from: ", self.sources, "\n") end
    self:err("  advice:      fix that value in the config file, the WXPAY_* environment or the flags "
      .. "(flags override the environment, which overrides the file); 'wxpay config' shows them\n")
    return f.exit
  end
  self:err(PROGRAM, ": ", f.message, "\n")
  return f.exit
end

local function describe_sources(source)
  local seen, list = {}, {}
  for _, s in pairs(source) do
    if not seen[s] then seen[s] = true; list[#list + 1] = s end
  end
  table.sort(list)
  return #list > 0 and table.concat(list, "; ") or "nothing"
end

function Ctx:run(argv)
  local a = M.parse(argv)
  self.args = a
  self.json = a.json
  if a.version then
    local wxpay = require "wxpay"
    local core = require "wxpay.core"
    local lua = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
    if a.json then
      self:emit_json { ok = true, version = wxpay._VERSION, lua = lua, libcurl = core.curl_version }
    else
      self:out(("wxpay %s (%s, libcurl %s)\n"):format(wxpay._VERSION, lua, tostring(core.curl_version)))
    end
    return EXIT_OK
  end
  if a.help then
    self:out(a.command and M.COMMAND_HELP[a.command] or M.USAGE)
    return EXIT_OK
  end
  if not a.command then usage_error("no command given (revoke, query, cancel, certificates, config)") end
  check_args(a)

  local wxpay = require "wxpay"
  self.wxpay = wxpay
  local getenv = self.getenv
  local sandbox_cfg
  if a.sandbox then
    local sb = self:start_sandbox()
    sandbox_cfg = { serial_no = sb.serial_no, private_key = sb.private_key,
      platform_certs = { sb.platform_cert }, apiv3_key = sb.apiv3_key, base_url = sb.base_url,
      ca_file = sb.ca_file }
    if a.sub_mchid then sandbox_cfg.sp_mchid = sb.sp_mchid else sandbox_cfg.mchid = sb.mchid end
  end
  local opts, source = M.configure(a, getenv, sandbox_cfg)
  self:secret(opts.apiv3_key)
  if is_pem(opts.private_key) then   -- inline key text: never echo any of it
    for line in opts.private_key:gmatch("[^\r\n]+") do
      if not line:find("-----", 1, true) then self:secret(line) end
    end
  end
  if next(opts) == nil then
    fail(EXIT_USAGE, "CONFIG_ERROR", "no configuration found: give --config FILE, or set WXPAY_MCHID, "
      .. "WXPAY_SERIAL_NO, WXPAY_PRIVATE_KEY and WXPAY_PLATFORM_CERT (or WXPAY_APIV3_KEY), "
      .. "or create ~/.config/wxpay/config (see 'wxpay --help')", { bare = true })
  end
  self.sources = describe_sources(source)

  local level = a.verbose and LEVELS.debug or (a.command == "cancel" and LEVELS.info or LEVELS.warn)
  opts.logger = self:logger(level)
  local client, err = wxpay.new(opts)
  if not client then config_error(err.message) end
  self.client = client
  if a.seed then self:seed(a, opts) end
  return CMD[a.command](self, client, a, opts, source)
end

--- Runs the command line `argv` (like the global `arg`); returns the exit status.
-- `env.root`: the source checkout (enables --sandbox); `env.getenv`: os.getenv.
function M.main(argv, env)
  env = env or {}
  local ctx = setmetatable({ root = env.root, getenv = env.getenv or os.getenv, secrets = {} }, Ctx)
  local list = {}
  for i = 1, #argv do
    list[i] = argv[i]
    if argv[i] == "--json" then ctx.json = true end
  end
  local ok, res = xpcall(ctx.run, function(e)
    if getmetatable(e) == Failure then return e end
    return setmetatable({ exit = EXIT_API, code = "INTERNAL_ERROR",
      message = "internal error: " .. tostring(e), trace = debug.traceback() }, Failure)
  end, ctx, list)
  if ctx.client then ctx.client:close() end
  ctx:stop_sandbox()
  if ok then
    io.stdout:flush()
    return res
  end
  local code = ctx:report_failure(res)
  if res.trace and ctx.args and ctx.args.verbose then ctx:err(res.trace, "\n") end
  io.stdout:flush()
  return code
end

return M
