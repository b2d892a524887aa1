-- luacheck: std ngx_lua
--- A complete WeChat Pay notification handler for OpenResty / nginx
-- (docs/notifications.md).  nginx.conf:
--
--   lua_package_path  "/opt/wxpay/lua/?.lua;/opt/wxpay/lua/?/init.lua;/opt/wxpay/examples/?.lua;;";
--   lua_package_cpath "/opt/wxpay/build/luajit/?.so;;";
--   lua_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
--   resolver 127.0.0.53;                      # cosockets resolve names through it
--   lua_shared_dict wxpay_orders 10m;         # this example's stand-in for a database
--   init_worker_by_lua_block { require("notify_nginx").init("/etc/wxpay/client.json") }
--   server {
--       listen 443 ssl;                        # the notify_url WeChat Pay posts to
--       location = /wxpay/notify {
--           client_max_body_size 1m;           # bodies are a few KB; bigger ones are refused
--           content_by_lua_block { require("notify_nginx").handle() }
--       }
--   }
--
-- The client's config must hold apiv3_key (notifications are encrypted with it).
-- Must not: record anything before client:notification verified it, or answer
-- success before the record is stored.
local cjson = require "cjson.safe"
local wxpay = require "wxpay"
local ngx_notify = require "wxpay.ngx_notify"

local M = {}

--- In init_worker: one client per worker, keys parsed once.
function M.init(config)
  M.client = assert(wxpay.new(config))
end

--- The merchant's step: record what the notification says.  It runs once per
-- delivery, and WeChat delivers the same event.id again until it gets a success
-- answer (event.seen tells a repeat, but only as a hint), so it must be
-- idempotent: here a `set` keyed by the order, which a repeat overwrites with
-- the same facts.  Return true only once the record is stored.
function M.record(event)
  local r = event.resource
  local key, value
  if event.event_type == "TRANSACTION.SUCCESS" then
    if type(r.out_trade_no) ~= "string" then return nil, "no out_trade_no" end
    key = "paid:" .. r.out_trade_no
    value = { trade_state = r.trade_state, transaction_id = r.transaction_id or r.id,
      total = type(r.amount) == "table" and r.amount.total or nil, success_time = r.success_time }
  elseif event.event_type:match("^REFUND%.") then
    if type(r.out_trade_no) ~= "string" then return nil, "no out_trade_no" end
    key = "refund:" .. r.out_trade_no
    value = { refund_status = r.refund_status, refund_id = r.refund_id, out_refund_no = r.out_refund_no }
  else
    ngx.log(ngx.WARN, "notification ", event.id, ": unhandled event type ", event.event_type)
    return true   -- nothing to record; a failure would only make WeChat retry
  end
  value.notification_id = event.id
  local ok, err = ngx.shared.wxpay_orders:set(key, cjson.encode(value))
  if not ok then return nil, err end
  return true
end

--- content_by_lua: verify, decrypt, record, answer.
function M.handle()
  return ngx_notify.handle(M.client, M.record)
end

return M
