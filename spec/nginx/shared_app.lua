-- luacheck: std ngx_lua
--- The nginx application of the nginx suite's second run (4 workers,
-- master_process on, spec/nginx/workers.conf.in): platform certificates
-- shared between workers through `shared_dict` (issue 14).
--
-- init_worker_by_lua: `require("shared_app").init{...}` creates, per worker,
-- a client with only apiv3_key and shared_dict = "wxpay_certs" (no call yet,
-- so the first calls race in the requests), and tries a dict that does not exist.
-- content_by_lua: `require("shared_app").handle()` serves
--   /query?out_trade_no=         the worker's shared client: {ok, pid, trade_state | code}
--   /threads?n=&out_trade_no=     a fresh client (no dict), n light threads' first calls
--   /fresh?out_trade_no=[&both=1]  a fresh client with the dict [and a cache_dir]
--   /plant?kind=                  spoils (or deletes) the dict's record
--   /dict                         the dict's wxpay items (for the driver's secret check)
--   /boot                         what init_worker saw
local cjson = require "cjson.safe"
local wxpay = require "wxpay"

local M = { boot = {} }
local DICT = "wxpay_certs"

local common = require "ngx_common"
local logger, read_json = common.logger, common.read_json

local function options(over)
  local sb = M.sandbox
  local o = { mchid = sb.mchid, serial_no = sb.serial_no, private_key = sb.private_key,
    apiv3_key = sb.apiv3_key, base_url = sb.base_url, ca_file = sb.ca_file, logger = logger }
  for k, v in pairs(over or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return o
end

function M.init(conf)
  M.sandbox = read_json(conf.sandbox_json)
  M.cache_dir = conf.cache_dir
  M.client = assert(wxpay.new(options { shared_dict = DICT }))
  local c, err = wxpay.new(options { shared_dict = "no_such_dict" })
  M.boot.bad_dict = c and "accepted" or { code = err.code, message = err.message }
  c, err = wxpay.new(options { shared_dict = DICT, apiv3_key = false,
    platform_certs = { M.sandbox.platform_cert } })
  -- without apiv3_key the dict still serves the pace and the seen-ids, but keeps no certificates
  M.boot.no_apiv3 = c and { accepted = true, cert_stores = c.cert_stores ~= nil }
    or { code = err.code, message = err.message }
end

local handlers = {}

function handlers.query(a, r)
  local order, err = M.client:query { out_trade_no = a.out_trade_no }
  if order then
    r.ok, r.trade_state = true, order.trade_state
  else
    r.ok, r.code, r.message = false, err.code, err.message
  end
end

-- n light threads make the first calls of one fresh client at once
function handlers.threads(a, r)
  local c = assert(wxpay.new(options()))
  local n = tonumber(a.n) or 20
  local threads = {}
  for i = 1, n do
    threads[i] = ngx.thread.spawn(function()
      local order, err = c:query { out_trade_no = a.out_trade_no }
      return order and order.trade_state or err.code
    end)
  end
  r.results, r.ok = {}, true
  for i = 1, n do
    local ok, res = ngx.thread.wait(threads[i])
    r.results[i] = ok and res or ("raised: " .. tostring(res))
    if res ~= "SUCCESS" then r.ok = false end
  end
  c:close()
end

-- /fresh?both=1: a fresh client with the dict and a cache_dir
function handlers.fresh(a, r)
  local c = assert(wxpay.new(options { shared_dict = DICT, cache_dir = a.both and M.cache_dir or nil }))
  local order, err = c:query { out_trade_no = a.out_trade_no }
  if order then
    r.ok, r.trade_state = true, order.trade_state
  else
    r.ok, r.code, r.message = false, err.code, err.message
  end
  r.certificates = c:certificates()
  c:close()
end

-- Spoils the record the workers share: what another tenant of this nginx
-- (or a bug) could write.  kind: body (one ciphertext byte changed),
-- garbage (not JSON), future (saved_at moved ahead of its signed timestamp).
function handlers.plant(a, r)
  local dict = ngx.shared[DICT]
  local keys = dict:get_keys(0)
  for _, k in ipairs(keys) do
    -- certificate records only: not the lock, not the nonces or pace slots the dict also holds
    if not (k:find(":lock$") or k:find("^wxpay:nonce:") or k:find("^wxpay:pace:")) then
      local v = dict:get(k)
      local rec = cjson.decode(v)
      if a.kind == "delete" then
        v = nil
      elseif a.kind == "garbage" then
        v = v:sub(1, math.floor(#v / 2))
      elseif a.kind == "future" then
        rec.saved_at = rec.saved_at + 3600
        v = cjson.encode(rec)
      else
        -- change one character inside the first ciphertext (base64 stays valid)
        local s, e = rec.body:find('"ciphertext":"', 1, true)
        local i = e + 10
        local ch = rec.body:sub(i, i)
        rec.body = rec.body:sub(1, i - 1) .. (ch == "A" and "B" or "A") .. rec.body:sub(i + 1)
        r.changed_at = s
        v = cjson.encode(rec)
      end
      dict:set(k, v)
      r.planted = (r.planted or 0) + 1
    end
  end
  r.ok = (r.planted or 0) > 0
end

function handlers.dict(_, r)
  local dict = ngx.shared[DICT]
  r.items = {}
  for _, k in ipairs(dict:get_keys(0)) do r.items[k] = dict:get(k) end
  r.ok = true
end

function handlers.boot(_, r)
  r.ok, r.boot = true, M.boot
end

function M.handle()
  local name = ngx.var.uri:match("^/([%w_]+)$")
  local h = name and handlers[name]
  if not h then return ngx.exit(404) end
  local r = { pid = ngx.worker.pid() }
  local ok, perr = pcall(h, ngx.req.get_uri_args(), r)
  if not ok then r.ok, r.code, r.message = false, "LUA_ERROR", tostring(perr) end
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode(r))
end

return M
