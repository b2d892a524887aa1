-- luacheck: std ngx_lua
--- wxpay.ngx_notify: the OpenResty side of a notification handler.  It reads
-- the request body (in memory, or the temp file nginx buffered it to), has
-- client:notification verify and decrypt it, runs the merchant's callback,
-- and answers WeChat Pay: 204 with no body only once the callback returned
-- true (the merchant recorded the event); otherwise a 4xx/5xx with
-- {"code":"FAIL","message":"…"}, so WeChat retries.
--
--   location = /wxpay/notify {
--       content_by_lua_block {
--           require("wxpay.ngx_notify").handle(client, function(event)
--               -- record event.resource (idempotently: the same event.id comes again)
--               return true
--           end)
--       }
--   }
--
-- Must not: answer success before the callback returned true; put the
-- library's or the callback's error text, the resource or any key into the
-- answer (they go to nginx's error log, without the resource); verify or
-- decrypt anything itself (that is wxpay.notification's one path).
local cjson = require "cjson.safe"

local M = {}

-- What WeChat reads in a failure answer: fixed texts, never an error message.
local FAIL = {
  BAD_SIGNATURE = { 401, "signature verification failed" },
  BAD_NOTIFICATION = { 400, "the notification could not be decrypted or parsed" },
  TOO_LARGE = { 413, "the notification body is too large" },
  METHOD = { 405, "notifications are POSTed" },
  CALLBACK = { 500, "the merchant could not record the notification" },
  OTHER = { 500, "the notification could not be processed" },
}

--- The request body: the in-memory buffer, or the file nginx buffered it to
-- (client_body_buffer_size), read with at most max + 1 bytes.
-- Returns body, or nil and "too large" / why.
function M.read_body(max)
  local length = tonumber(ngx.var.content_length)
  if length and length > max then return nil, "too large" end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if not path then return "" end           -- no body at all
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot open the buffered request body: " .. tostring(err) end
  body = f:read(max + 1) or ""
  f:close()
  if #body > max then return nil, "too large" end
  return body
end

--- The work without the answer: returns status (204 or a failure status),
-- the failure answer table or nil, and the event or the error.
function M.process(client, callback)
  if ngx.req.get_method() ~= "POST" then return FAIL.METHOD[1], FAIL.METHOD end
  local body, why = M.read_body(client.max_body)
  if not body then
    local f = why == "too large" and FAIL.TOO_LARGE or FAIL.OTHER
    ngx.log(ngx.WARN, "wxpay notification refused: ", why)
    return f[1], f
  end
  local event, err = client:notification(ngx.req.get_headers(100), body)
  if not event then
    local f = FAIL[err.code] or FAIL.OTHER
    ngx.log(ngx.WARN, "wxpay notification refused: ", tostring(err))
    return f[1], f, err
  end
  local ok, res, cerr = pcall(callback, event)
  if ok and res == true then return 204, nil, event end
  ngx.log(ngx.ERR, "wxpay notification: the handler's callback failed for id ", event.id, ": ",
    tostring(ok and (cerr or ("returned " .. tostring(res))) or res))
  return FAIL.CALLBACK[1], FAIL.CALLBACK, event
end

--- Reads, verifies, runs callback(event), answers, and ends the request.
function M.handle(client, callback)
  local status, fail = M.process(client, callback)
  ngx.status = status
  if not fail then return ngx.exit(ngx.HTTP_NO_CONTENT) end
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode { code = "FAIL", message = fail[2] })
  return ngx.exit(ngx.HTTP_OK)
end

return M
