-- luacheck: std ngx_lua
--- The app of the nginx-pace suite (tools/suites/nginx-pace.sh): one client
-- per worker, of one merchant, pacing revokes at `rate` through the shared
-- dict named in the conf.
--   /revoke?out_trade_no=X   one revoke: {ok=, code=, pid=}
--   /dict                    what the dict holds: {keys=[...], types=[...]}
--   /batch_raise?prefix=P&n=N revoke_many of P1..PN on 4 light threads with a
--                            progress callback that raises on the first result,
--                            then a second batch: {raised=, second={...}}
local cjson = require "cjson.safe"
local wxpay = require "wxpay"

local M = {}

function M.init(conf)
  local f = assert(io.open(conf.sandbox_json, "rb"))
  local sb = assert(cjson.decode(f:read("*a")))
  f:close()
  M.dict_name = conf.shared_dict
  M.client = assert(wxpay.new {
    mchid = sb.mchid, serial_no = sb.serial_no, private_key = sb.private_key,
    platform_certs = { sb.platform_cert }, base_url = sb.base_url, ca_file = sb.ca_file,
    rate = conf.rate, shared_dict = conf.shared_dict,
  })
end

function M.handle()
  local a = ngx.req.get_uri_args()
  local r = { pid = ngx.worker.pid() }
  if ngx.var.uri == "/revoke" then
    local ok, err = M.client:revoke { out_trade_no = a.out_trade_no }
    r.ok, r.code = ok == true, err and err.code
  elseif ngx.var.uri == "/batch_raise" then
    local list = {}
    for i = 1, tonumber(a.n) do list[i] = { out_trade_no = a.prefix .. i } end
    local ok, err = pcall(M.client.revoke_many, M.client, list, { concurrency = 4,
      progress = function() error("progress stops here", 0) end })
    r.raised = not ok and tostring(err) or false
    local res = M.client:revoke_many({ { out_trade_no = "NEVER-MADE-" .. a.prefix },
      { out_trade_no = a.prefix .. (tonumber(a.n) + 1) } }, { concurrency = 2 })
    r.second = { type(res[1]) == "table" and res[1].code or tostring(res[1]), res[2] == true }
  elseif ngx.var.uri == "/dict" then
    local dict = M.dict_name and ngx.shared[M.dict_name]
    r.keys, r.types = {}, {}
    if dict then
      for _, k in ipairs(dict:get_keys(0)) do
        r.keys[#r.keys + 1] = k
        r.types[#r.types + 1] = type(dict:get(k))
      end
    end
  else
    ngx.status = 404
  end
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode(r))
end

return M
