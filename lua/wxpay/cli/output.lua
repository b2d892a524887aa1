--- The wxpay command's shared pieces: exit codes, the Failure that ends a
-- command, and every byte it writes (redacted, one line per message) with
-- the logger, order printing and small formatting helpers.
-- Must not: write key material or raw control bytes to the terminal.
local cjson = require "cjson.safe"
local escape = require("wxpay.errors").escape

local M = {}

M.PROGRAM = "wxpay"
M.EXIT_OK, M.EXIT_API, M.EXIT_USAGE = 0, 1, 2
local EXIT_USAGE = M.EXIT_USAGE

local STATES = {
  SUCCESS = "paid: the customer was charged (a revoke within 7 days refunds them)",
  REFUND = "refunded (wholly or in part): it can no longer be revoked",
  NOTPAY = "not paid",
  USERPAYING = "the customer is still paying (entering the password)",
  PAYERROR = "the payment failed",
  CLOSED = "closed: the customer was never charged",
  REVOKED = "revoked: the customer was refunded",
}M.STATES = STATES

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

-- cjson escapes C0 and DEL but leaves the C1 controls (U+0080-U+009F, which
-- some terminals obey) raw: strict JSON output escapes them as \u00XX too.
local function json_encode(v)
  local s = cjson.encode(v)
  if not s then return '{"ok":false}' end
  s = s:gsub("\\/", "/"):gsub("\194([\128-\159])", function(c) return ("\\u%04x"):format(c:byte()) end)
  return s
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
-- Output (everything written goes through redact and escape)
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

-- Every byte the command writes passes here: redacted, then every control
-- byte but newline shown as \xNN (the same escaping as tostring(err)).
function Ctx:out(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = escape(self:redact(parts[i]), true) end
  io.stdout:write(table.concat(parts))
end

function Ctx:err(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = escape(self:redact(parts[i]), true) end
  io.stderr:write(table.concat(parts))
  io.stderr:flush()
end

function Ctx:emit_json(obj)
  self:out(json_encode(obj), "\n")
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

M.Failure, M.fail, M.usage_error, M.config_error = Failure, fail, usage_error, config_error
M.json_encode, M.exists, M.shell_quote, M.num, M.is_pem = json_encode, exists, shell_quote, num, is_pem
M.parse_iso8601, M.LEVELS, M.Ctx = parse_iso8601, LEVELS, Ctx

return M
