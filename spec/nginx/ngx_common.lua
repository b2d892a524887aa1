-- luacheck: std ngx_lua
--- What the nginx suites' apps share (wxpay_app.lua, shared_app.lua): a
-- logger into nginx's error log and a JSON file reader.
-- Must not: hold state; the apps own their clients.
local cjson = require "cjson.safe"

local M = {}

local LEVELS = { debug = ngx.DEBUG, info = ngx.INFO, warn = ngx.WARN, error = ngx.ERR }

--- The wxpay `logger` option: one error-log line per event, fields as JSON.
function M.logger(level, message, fields)
  ngx.log(LEVELS[level] or ngx.NOTICE, "wxpay ", level, ": ", message, " ",
    cjson.encode(fields) or "")
end

function M.read_json(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return assert(cjson.decode(text))
end

return M
