-- luacheck: std ngx_lua
--- The nginx application the nginx suite drives (tools/suites/nginx.sh).
--
-- init_worker_by_lua: `require("wxpay_app").init{...}` creates every client
-- once per worker (in a phase where cosockets are not allowed: transport
-- "auto" picks per call), runs one query there (libcurl) and starts a timer
-- that revokes an order (cosockets).
-- content_by_lua: `require("wxpay_app").handle()` serves
--   /trivial                          "ok", at once
--   /revoke?out_trade_no=|transaction_id=&client=NAME
--   /query?out_trade_no=&client=NAME
--   /cancel?out_trade_no=&paid_ago=S&deadline_ms=MS&client=NAME
--   /revoke_many?prefix=P&n=N&concurrency=C
--   /transport?case=NAME | url=URL    the cosocket transport alone (see RAW)
--   /boot                             what init_worker and its timer saw
-- and answers JSON {ok=, code=, message=, sent=, ..., t_start=, t_end=}.
local cjson = require "cjson.safe"
local wxpay = require "wxpay"
local transport = require "wxpay.transport"

local M = { clients = {}, boot = {} }

local common = require "ngx_common"
local logger, read_json = common.logger, common.read_json

local function which(client)
  return { curl = client._curl ~= nil, cosocket = client._cosocket ~= nil }
end

--- conf: {sandbox_json=, proxy_url=, untrusted_url=, refused_url=, boot_order=}
function M.init(conf)
  local sb = read_json(conf.sandbox_json)
  M.sandbox = sb
  local function options(over)
    local o = {
      mchid = sb.mchid, serial_no = sb.serial_no, private_key = sb.private_key,
      platform_certs = { sb.platform_cert }, base_url = sb.base_url, ca_file = sb.ca_file,
      transport = "auto", logger = logger,
    }
    for k, v in pairs(over or {}) do
      if v == false then o[k] = nil else o[k] = v end
    end
    return assert(wxpay.new(o))
  end
  M.clients.main = options()
  M.clients.short = options { timeout_ms = 1000 }
  M.clients.curl = options { transport = "curl", logger = false }
  M.clients.proxy = options { base_url = conf.proxy_url }
  M.clients.untrusted = options { base_url = conf.untrusted_url, backup_urls = { sb.base_url } }
  M.clients.untrusted_only = options { base_url = conf.untrusted_url }
  M.clients.refused = options { base_url = conf.refused_url }
  M.clients.noresolve = options { base_url = "https://wxpay-nginx-test.invalid" }
  M.clients.forced = options { transport = "cosocket" }
  M.raw_url = conf.raw_url

  -- init_worker: no cosockets here, so "auto" uses libcurl (blocking, once at start)
  local main = M.clients.main
  local boot = M.boot
  boot.init_phase = ngx.get_phase()
  boot.init_cosocket_phase = transport.cosocket_phase()
  local order, err = main:query { out_trade_no = conf.boot_order }
  boot.init_query = order and order.trade_state or (err and err.code)
  boot.init_used = which(main)
  -- transport = "cosocket" forced where cosockets are not allowed: an error, not a raise
  local ok0, forced, ferr = pcall(M.clients.forced.query, M.clients.forced, { out_trade_no = conf.boot_order })
  boot.init_forced = ok0 and { ok = forced ~= nil, code = ferr and ferr.code, sent = ferr and ferr.sent,
    message = ferr and ferr.message } or { raised = tostring(forced) }

  -- a timer: cosockets are allowed, the same client switches to them
  local ok, terr = ngx.timer.at(0, function(premature)
    if premature then return end
    local t = { phase = ngx.get_phase(), cosocket_phase = transport.cosocket_phase() }
    local done, rerr = main:revoke { out_trade_no = conf.boot_order }
    t.ok, t.code = done == true, rerr and rerr.code
    t.used = which(main)
    boot.timer = t
  end)
  if not ok then boot.timer = { ok = false, code = "timer: " .. tostring(terr) } end
end

local function err_fields(r, err)
  r.ok = false
  r.code, r.message, r.sent = err.code, err.message, err.sent
  r.status, r.retryable, r.attempts = err.status, err.retryable, err.attempts
  r.verified = err.verified
end

local handlers = {}

function handlers.trivial()
  ngx.header.content_type = "text/plain"
  ngx.say("ok")
end

local function order_args(a)
  return { out_trade_no = a.out_trade_no, transaction_id = a.transaction_id }
end

function handlers.revoke(client, a, r)
  local ok, err = client:revoke(order_args(a))
  if ok then r.ok = true else err_fields(r, err) end
end

function handlers.query(client, a, r)
  local order, err = client:query(order_args(a))
  if order then r.ok, r.trade_state = true, order.trade_state else err_fields(r, err) end
end

function handlers.cancel(client, a, r)
  local args = order_args(a)
  if a.paid_ago then args.paid_at = ngx.now() - tonumber(a.paid_ago) end
  if a.deadline_ms then args.deadline_ms = tonumber(a.deadline_ms) end
  local state, info = client:cancel(args)
  if state then
    r.ok, r.state, r.attempts, r.confirmed = true, state, info.attempts, info.confirmed
  else
    err_fields(r, info)
  end
end

-- /revoke_many?prefix=P&n=N&concurrency=C: orders P1..PN at once (ngx.thread + cosockets)
function handlers.revoke_many(client, a, r)
  local list = {}
  for i = 1, tonumber(a.n) do list[i] = { out_trade_no = a.prefix .. i } end
  local results = client:revoke_many(list, { concurrency = tonumber(a.concurrency) })
  r.ok, r.revoked, r.codes = true, 0, {}
  for i, res in ipairs(results) do
    if res == true then r.revoked = r.revoked + 1 else r.codes[i] = res.code end
  end
end

function handlers.boot(_, _, r)
  r.ok = M.boot.timer ~= nil
  r.boot = M.boot
end

-- Canned raw answers for the transport's parser (served by the raw HTTPS server).
local PAD = ("x"):rep(100)
local RAW = {
  continue = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi",
  chunked_ext = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=v\r\nabc\r\n"
    .. "2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
  close_delimited = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close",
  http10 = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold",
  no_body_304 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
  headers = "HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nX-DUP: first\r\nx-dup: second\r\n"
    .. "Content-Length: 0\r\n\r\n",
  conflicting_length = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
  bad_status = "HTPT/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
  bad_header = "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
  huge_head = "HTTP/1.1 200 OK\r\n" .. ("X-Pad: " .. PAD .. "\r\n"):rep(700) .. "Content-Length: 0\r\n\r\n",
  big_length = "HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n" .. ("y"):rep(65),
  big_chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. ("20\r\n" .. ("z"):rep(32) .. "\r\n"):rep(3) .. "0\r\n\r\n",
  big_to_close = "HTTP/1.1 200 OK\r\n\r\n" .. ("w"):rep(100),
  bad_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
  cut_chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly-part",
  gzip_te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
  nothing = "",
}

function M.raw()
  local bytes = RAW[ngx.var.uri:sub(2)]
  if not bytes then return ngx.exit(404) end
  local sock = assert(ngx.req.socket(true))
  if bytes ~= "" then sock:send(bytes) end
end

-- /transport?case=NAME: the cosocket transport alone (max_body 64) against a raw answer
function handlers.transport(_, a, r)
  local t = require("wxpay.cosocket").new { timeout_ms = 3000, connect_timeout_ms = 1000, max_body = 64 }
  local url = a.url or (M.raw_url .. "/" .. tostring(a.case))
  local res, err = t.request { method = "GET", url = url, headers = { Accept = "*/*" }, body = "" }
  if res then
    r.ok, r.res = true, res
  else
    r.ok, r.code, r.message, r.sent = false, err.code, err.message, err.sent
  end
end

function M.handle()
  local name = ngx.var.uri:match("^/([%w_]+)$")
  local h = name and handlers[name]
  if not h then return ngx.exit(404) end
  if name == "trivial" then return h() end
  local a = ngx.req.get_uri_args()
  local client = M.clients[a.client or "main"]
  if not client then return ngx.exit(400) end
  ngx.update_time()
  local r = { t_start = ngx.now(), phase = ngx.get_phase() }
  local ok, perr = pcall(h, client, a, r)
  if not ok then r.ok, r.code, r.message = false, "LUA_ERROR", tostring(perr) end
  ngx.update_time()
  r.t_end = ngx.now()
  r.used = which(client)
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode(r))
end

return M
