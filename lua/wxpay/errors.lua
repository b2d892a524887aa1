--- Error codes, advice, and the error object every failure returns.
-- `wxpay.errors.SYSTEM_ERROR == "SYSTEM_ERROR"`, `wxpay.errors.info(code)`;
-- `wxpay.errors.codes` lists just the codes (sorted).
-- Must not: do I/O, or put anything but the caller's text in a message.
local M = {}

local INFO = {
  -- the seed page's table (Revoke Order, "Solution" column)
  SYSTEM_ERROR = {
    description = "Errors returned from the API",
    action = "Call the Result View API of the scanned order immediately to view the current "
      .. "order status and decide the next step according to the status.",
    retryable = true },
  INVALID_TRANSACTIONID = {
    description = "Invalid transaction_id",
    action = "Invalid parameter. Check again." },
  PARAM_ERROR = {
    description = "Invalid parameter",
    action = "Please check your program according to the details returned by the API." },
  REVERSE_EXPIRE = {
    description = "The order cannot be canceled.",
    action = "Check whether the order to be canceled is within the cancel period "
      .. "(7 days); for older paid orders use the refund API." },
  INVALID_REQUEST = {
    description = "Invalid request",
    action = "Check whether the merchant permissions are unusual and whether there are "
      .. "repeated payment requests, invalid certificate, rate limit, etc." },
  TRADE_ERROR = {
    description = "Order error",
    action = "Check whether the user account is unusual, under risk control and in "
      .. "compliance with the rules. If the order was already refunded (query: trade_state "
      .. "REFUND), it can no longer be revoked: nothing more to do for it." },
  -- other WeChat Pay v3 answers
  USERPAYING = {
    description = "The user is still paying (entering the password)",
    action = "Wait a few seconds, query the order, and revoke again if it is not final.",
    retryable = true },
  SIGN_ERROR = {
    description = "WeChat Pay could not verify the request signature",
    action = "Check mchid, serial_no and that private_key is the key of that API certificate; "
      .. "check the machine's clock." },
  NO_AUTH = {
    description = "The merchant has no permission for this API or order",
    action = "Check the merchant's products and the institutional relationship (sp_mchid/sub_mchid)." },
  ORDER_NOT_EXIST = {
    description = "The order does not exist",
    action = "Check the order number and the merchant id; an order that was never created "
      .. "needs no revoke." },
  RESOURCE_NOT_EXISTS = {
    description = "The resource does not exist",
    action = "Check the path and the order number." },
  RATELIMIT_EXCEEDED = {
    description = "Too many requests (revoke allows 150 per second)",
    action = "Slow down and retry after a short wait.",
    retryable = true },
  SERVICE_UNAVAILABLE = {
    description = "WeChat Pay is temporarily unavailable",
    action = "Retry later, or switch to the backup host; query the order before revoking again.",
    retryable = true },
  -- the library's own
  INVALID_ARGUMENT = {
    description = "The call's data is invalid; nothing was sent",
    action = "Fix the argument named in the message." },
  CONFIG_ERROR = {
    description = "The client options are unusable",
    action = "Fix the option named in the message (key file, certificate, ids, URLs)." },
  NETWORK_ERROR = {
    description = "The connection failed (connect, reset or DNS)",
    action = "Retry; if the request may have been received, query the order before revoking again.",
    retryable = true },
  TIMEOUT = {
    description = "A time limit passed",
    action = "Query the order: the request may have been processed. Retry if it was not.",
    retryable = true },
  TLS_ERROR = {
    description = "The server's certificate or the TLS handshake failed",
    action = "Check ca_file and base_url; never disable verification." },
  BAD_SIGNATURE = {
    description = "The answer's (or notification's) signature is missing, invalid, from an "
      .. "unknown key, too old/new, or a replay of one already seen",
    action = "Do not trust this answer. Check the platform certificates / public key and the "
      .. "clock; query the order to learn its real state." },
  BAD_NOTIFICATION = {
    description = "A notification whose body is not the expected JSON, names an unknown "
      .. "algorithm, does not decrypt, or is over max_body_bytes",
    action = "Do not trust it: answer WeChat with a failure (it retries); check apiv3_key is the "
      .. "merchant's current APIv3 key, and query the order to learn its real state." },
  BAD_RESPONSE = {
    description = "The answer is malformed (truncated, not JSON, too large or an unexpected status) "
      .. "or about another order or merchant than the one asked for",
    action = "Do not trust this answer; query the order to learn its real state." },
}

--- Every code the library knows, sorted: `for _, c in ipairs(wxpay.errors.codes)`.
M.codes = {}
for code in pairs(INFO) do
  M[code] = code
  M.codes[#M.codes + 1] = code
end
table.sort(M.codes)

--- Advice for a code: `{ description =, action =, retryable = }`.
-- Unknown codes get a generic entry (never nil), so callers can always print it.
function M.info(code)
  if type(code) == "table" then code = code.code end   -- an error object (or any {code=})
  if code == nil then
    return setmetatable({ description = "No code given",
      action = "Pass an error code string (e.g. \"SYSTEM_ERROR\") or an error object.",
      retryable = false }, M.info_mt)
  end
  local i = INFO[code]
  if not i then
    return setmetatable({ code = code, description = "Unknown code " .. tostring(code),
      action = "See the WeChat Pay documentation for this code.", retryable = false },
      M.info_mt)
  end
  return setmetatable({ code = code, description = i.description, action = i.action,
    retryable = i.retryable == true }, M.info_mt)
end

M.info_mt = {
  __name = "wxpay.ErrorInfo",
  __tostring = function(i)
    -- one readable line (the REPL prints with tostring): "CODE: description. Advice: action"
    local d = tostring(i.description):gsub("[%.%s]+$", "")
    return (i.code ~= nil and (tostring(i.code) .. ": ") or "") .. d .. ". Advice: "
      .. tostring(i.action) .. (i.retryable and " (retryable)" or "")
  end,
}

--- Whether a failure may succeed when tried again (api.md).
function M.retryable(code, status)
  if status and status >= 500 then return true end
  local i = INFO[code]
  return i ~= nil and i.retryable == true
end

--- The one escaping function for text from outside (answers, callers) that
-- reaches a terminal or a log: every control byte (C0 and DEL, and the C1
-- controls U+0080-U+009F as UTF-8) becomes a visible \xNN, so no answer can
-- move the cursor, erase a line or fake output.  Newlines are kept only
-- with keep_newline (the CLI's multi-line output); tostring(err) is one line.
local C0_ALL, C0_KEEP_NL = "[%z\1-\31\127]", "[%z\1-\9\11-\31\127]"
local function hex(c) return ("\\x%02x"):format(c:byte()) end
function M.escape(s, keep_newline)
  s = tostring(s):gsub("\194[\128-\159]", function(c) return hex(c:sub(1, 1)) .. hex(c:sub(2)) end)
  return (s:gsub(keep_newline and C0_KEEP_NL or C0_ALL, hex))
end

local Error = {}
Error.__index = Error
Error.__name = "wxpay.Error"

function Error.__tostring(e)
  local parts = { e.code, ": ", e.message }
  local extra = {}
  if e.status then extra[#extra + 1] = "HTTP " .. e.status end
  if e.request_id then extra[#extra + 1] = "request " .. e.request_id end
  if e.attempts then extra[#extra + 1] = e.attempts .. " attempt(s)" end
  if e.verified == false then extra[#extra + 1] = "unverified answer" end
  if #extra > 0 then parts[#parts + 1] = " (" .. table.concat(extra, ", ") .. ")" end
  local i = INFO[e.code]
  if i then parts[#parts + 1] = " - " .. i.action end
  -- one line, whatever an answer's message held (CR/LF, escapes, NUL): shown as \xNN
  return M.escape(table.concat(parts), false)
end

function Error.__concat(a, b)
  return tostring(a) .. tostring(b)
end

M.Error = Error

--- A new error object. `fields` may hold status, detail, request_id, verified…
function M.new(code, message, fields)
  local e = fields or {}
  e.code = code
  e.message = message or code
  if e.retryable == nil then e.retryable = M.retryable(code, e.status) end
  return setmetatable(e, Error)
end

function M.is(v)
  return getmetatable(v) == Error
end

return M
