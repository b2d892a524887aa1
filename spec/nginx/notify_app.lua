-- luacheck: std ngx_lua
--- The notification part of the nginx suite's app (spec/nginx/notify_tests.lua
-- drives it): examples/notify_nginx.lua as documented at /wx/notify, plus
--   /wx/notify_flaky?fail=N   the example's record, failing the first N deliveries of each id
--   /wx/notify_small          the example's record behind client_body_buffer_size 1k
--   /wx/notified?key=K        what the example recorded under K, and the deliveries seen
local cjson = require "cjson.safe"
local example = require "notify_nginx"
local ngx_notify = require "wxpay.ngx_notify"

local M = { deliveries = {} }

function M.init(client_json)
  example.init(client_json)
  -- the seen-id check across workers; until the shared_dict option of wxpay.new
  -- lands (branch h-shared), the field it sets is set here
  example.client.shared_dict = "wxpay_seen"
end

-- Wraps the example's record: notes each delivery (id, seen, whether nginx
-- buffered the body to a file), fails the first `fail` ones of an id.
local function recorder(fail)
  return function(event)
    local list = M.deliveries[event.id] or {}
    M.deliveries[event.id] = list
    list[#list + 1] = { seen = event.seen, body_file = ngx.req.get_body_file() ~= nil,
      event_type = event.event_type }
    if #list <= fail then return nil, "the test's database is down" end
    return example.record(event)
  end
end

function M.handle()
  local uri = ngx.var.uri
  if uri == "/wx/notify_flaky" then
    return ngx_notify.handle(example.client, recorder(tonumber(ngx.var.arg_fail) or 0))
  elseif uri == "/wx/notify_small" then
    return ngx_notify.handle(example.client, recorder(0))
  elseif uri == "/wx/notified" then
    local key, id = ngx.var.arg_key, ngx.var.arg_id
    local stored = key and ngx.shared.wxpay_orders:get(key)
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode {
      record = stored and cjson.decode(stored) or nil,
      deliveries = id and M.deliveries[id] or {},
    })
    return
  end
  return ngx.exit(404)
end

return M
