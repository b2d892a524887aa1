--- Small shared helpers: argument checks, percent-encoding, files, JSON.
-- Must not: keep state, send anything, or echo a value that may be a secret
-- (util.show and util.show_path print only safe summaries).
local cjson = require "cjson.safe"
local errors = require "wxpay.errors"

local M = {}

M.json_decode = cjson.decode
M.json_encode = cjson.encode
M.null = cjson.null

--- Raise a programming error at the caller's caller (wrong Lua types).
function M.raise(msg, level)
  error("wxpay: " .. msg, (level or 2) + 1)
end

function M.invalid(msg)
  return nil, errors.new(errors.INVALID_ARGUMENT, msg)
end

function M.config_error(msg)
  return nil, errors.new(errors.CONFIG_ERROR, msg)
end

--- Shows a value in a message without echoing long or binary data.
function M.show(v)
  if type(v) ~= "string" then return tostring(v) end
  if #v > 40 then return ("a %d-byte string"):format(#v) end
  if v:find("[^\32-\126]") then return ("a %d-byte string with control or non-ASCII bytes"):format(#v) end
  return ("%q"):format(v)
end

-- RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~) stay; every other
-- byte is %XX.  (%w is locale-dependent: spell the set out.)
local function pct(c) return ("%%%02X"):format(c:byte()) end
function M.urlencode(s)
  return (s:gsub("[^A-Za-z0-9%-%._~]", pct))
end

-- A path segment: like a query value, every byte outside RFC 3986's
-- unreserved set is %XX (as wechatpay-php does: "F|x*y@z" -> "F%7Cx%2Ay%40z"),
-- so no gateway normalisation can make the signed target differ.
M.encode_segment = M.urlencode

--- True when every "%" in s starts a %XX escape.
function M.valid_pct(s)
  return not s:gsub("%%%x%x", ""):find("%", 1, true)
end

--- True when a path holds a "." or ".." segment (plain or percent-encoded),
-- which libcurl or the server would squash after we signed the raw path.
function M.has_dot_segment(path)
  for seg in path:gmatch("[^/]+") do
    local d = seg:gsub("%%2[Ee]", ".")
    if d == "." or d == ".." then return true end
  end
  return false
end

--- Query string from a table, in sorted key order (deterministic bytes).
function M.encode_query(q)
  local keys = {}
  for k, v in pairs(q) do
    if type(k) ~= "string" then M.raise("query keys must be strings", 3) end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      M.raise("query value for '" .. k .. "' must be a string, number or boolean", 3)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local out = {}
  for i, k in ipairs(keys) do
    out[i] = M.urlencode(k) .. "=" .. M.urlencode(tostring(q[k]))
  end
  return table.concat(out, "&")
end

--- Order ids (api.md): raises on wrong types, returns nil, err on bad data.
-- Returns the kind ("id" or "out-trade-no") and the value.
function M.order_id(args, level)
  level = (level or 2) + 1
  local tid, otn = args.transaction_id, args.out_trade_no
  if tid ~= nil and type(tid) ~= "string" then
    M.raise("transaction_id must be a string, got " .. type(tid), level)
  end
  if otn ~= nil and type(otn) ~= "string" then
    M.raise("out_trade_no must be a string, got " .. type(otn), level)
  end
  if tid and otn then return M.invalid("give exactly one of transaction_id and out_trade_no, not both") end
  if not tid and not otn then return M.invalid("give one of transaction_id and out_trade_no") end
  if tid then
    if #tid < 1 or #tid > 32 or tid:find("[^0-9]") then
      return M.invalid("transaction_id must be 1-32 digits, got " .. M.show(tid))
    end
    return "id", tid
  end
  if #otn < 1 or #otn > 32 or otn:find("[^0-9A-Za-z_|*@%-]") then
    return M.invalid("out_trade_no must be 1-32 characters of [0-9A-Za-z_|*@-], got " .. M.show(otn))
  end
  return "out-trade-no", otn
end

function M.check_fields(args, allowed, what, level)
  for k in pairs(args) do
    if not allowed[k] then
      M.raise(("unknown field %s in %s{...}"):format(M.show(tostring(k)), what), (level or 2) + 1)
    end
  end
end

function M.is_digits(s, max)
  return type(s) == "string" and #s >= 1 and #s <= (max or 32) and not s:find("[^0-9]")
end

--- A file name for a message: shown only when it looks like one (has a "/"
-- or "."), since a "path" may be key material given without its PEM armour
-- (a base64 body, an APIv3 key) that io.open's message would echo whole.
function M.show_path(path)
  if path:find("[/.]") then return M.show(path) end
  return ("a %d-byte name"):format(#path)
end

--- Why a file cannot be opened for reading (nil when it can); reads nothing.
function M.read_file_error(path)
  if path:find("\0", 1, true) then return M.show_path(path) .. ": the path holds a NUL byte" end
  local f, err = io.open(path, "rb")
  if f then f:close() return nil end
  err = tostring(err)
  if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
  return M.show_path(path) .. ": " .. err
end

M.escape = errors.escape

--- Reads a whole file; nil, reason when it cannot (the path is shown only
-- through M.show_path).
function M.read_file(path)
  -- io.open would silently open the name cut at the first NUL
  if path:find("\0", 1, true) then return nil, M.show_path(path) .. ": the path holds a NUL byte" end
  local f, err = io.open(path, "rb")
  if not f then
    err = tostring(err)
    if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
    return nil, M.show_path(path) .. ": " .. err
  end
  local data, rerr = f:read("*a")
  f:close()
  if not data then return nil, M.show_path(path) .. ": " .. tostring(rerr) end
  return data
end

--- PEM text, or a path to a PEM file.  Returns text, path-or-nil.
function M.pem_or_path(v)
  if v:find("-----BEGIN", 1, true) then return v, nil end
  local data, err = M.read_file(v)
  if not data then return nil, nil, err end
  return data, v
end

function M.dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

function M.iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

return M
