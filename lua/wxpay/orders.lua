--- The order calls and the generic one: client:revoke, client:query and
-- client:request build their signed request (paths, bodies, queries from
-- validated arguments) and read the verified answer: a query answer counts
-- only when it names the order and merchant asked for; success returns the
-- answer's metadata (request id, status, ms, base_url).
-- Must not: send anything before every argument is checked (bad data is
-- INVALID_ARGUMENT with nothing sent; wrong Lua types raise).
local errors = require "wxpay.errors"
local util = require "wxpay.util"
local secrets = require "wxpay.secrets"
local Pace = require "wxpay.pace"

local Orders = {}
local MIN_SEND_MS = 50  -- a request with less time than this left is not sent

local ORDER_FIELDS = { transaction_id = true, out_trade_no = true, sub_mchid = true }

-- Validates an order call; returns kind, id, sub_mchid or nil, err.
function Orders:_order_args(args, what, allowed)
  if type(args) ~= "table" then
    util.raise(("client:%s expects a table like {out_trade_no = \"…\"}, got %s"):format(what, type(args)), 3)
  end
  secrets.open(self)
  util.check_fields(args, allowed or ORDER_FIELDS, what, 3)
  local kind, id = util.order_id(args, 3)
  if not kind then return nil, id end
  local sub = args.sub_mchid
  if sub ~= nil and type(sub) ~= "string" then
    util.raise("sub_mchid must be a string, got " .. type(sub), 3)
  end
  if self.mode == "common" then
    if sub ~= nil then return util.invalid("sub_mchid is for institutional mode (this client has mchid)") end
  else
    sub = sub or self.sub_mchid
    if sub == nil then return util.invalid("institutional mode needs sub_mchid (per call or in wxpay.new)") end
    if not util.is_digits(sub) then return util.invalid("sub_mchid must be 1-32 digits, got " .. util.show(sub)) end
  end
  return kind, id, sub
end

local function json_string(s) return util.json_encode(s) end

function Orders:_revoke_request(kind, id, sub)
  local target = ("/v3/global/micropay/transactions/%s/%s/reverse"):format(kind, util.encode_segment(id))
  local body
  if self.mode == "common" then
    body = '{"mchid":' .. json_string(self.mchid) .. '}'
  else
    body = '{"sp_mchid":' .. json_string(self.sp_mchid) .. ',"sub_mchid":' .. json_string(sub) .. '}'
  end
  return target, body
end

function Orders:_query_target(kind, id, sub)
  local path = ("/v3/global/transactions/%s/%s"):format(kind, util.encode_segment(id))
  if self.mode == "common" then
    return path .. "?mchid=" .. util.urlencode(self.mchid)
  end
  return path .. "?sp_mchid=" .. util.urlencode(self.sp_mchid) .. "&sub_mchid=" .. util.urlencode(sub)
end

--- The success metadata of a verified answer (api.md): merchants keep the
-- request id for audits and support tickets.
local function meta_of(r)
  return { request_id = r.headers["request-id"], status = r.status, ms = r.ms, base_url = r.base_url }
end
Orders._meta_of = meta_of

-- Every revoke request waits for its slot of the merchant's pace (wxpay.pace);
-- with opt.timeout_ms the wait counts against it.
function Orders:_revoke(kind, id, sub, opt)
  local target, body = self:_revoke_request(kind, id, sub)
  local wait, ticket = Pace.wait_ms(self)
  local left = opt and opt.timeout_ms
  local waited = 0
  while true do
    if wait <= 0 then
      wait = Pace.hold_ms(ticket) -- the slot has come: 1 s after the answer `rate` places back?
      if wait <= 0 then break end
    end
    if left and waited + wait + MIN_SEND_MS > left then
      Pace.done(ticket)
      return nil, errors.new(errors.TIMEOUT, ("the next revoke slot at the rate limit (%g/s) is %d ms away, "
        .. "past the time left; nothing was sent"):format(self.rate, math.ceil(waited + wait)), { sent = false })
    end
    self:_sleep(wait)
    waited, wait = waited + wait, 0
  end
  if left and waited > 0 then opt = { timeout_ms = left - waited } end
  local r, err = self:_call("POST", target, body, opt, 204)
  Pace.done(ticket)
  if not r then return nil, err end
  return true, meta_of(r)
end

-- The transaction id of a query answer: WeChat's v3 answers name it
-- `transaction_id`; the Global API's answer (and the sandbox) name it `id`.
local TXID_FIELDS = { "transaction_id", "id" }

local function differs(what, got, want)
  return ("the answer is about %s %s, not %s"):format(what, util.show(got), util.show(want))
end

--- Why a verified query answer is not about the order and merchant asked for
-- (nil when it is): the id the call used must be there and equal, every
-- merchant field it carries must be this client's (and the call's sub_mchid),
-- and it must have a trade_state.  `c` is the client (mode, mchid, sp_mchid).
function Orders._binding_error(c, kind, id, sub, order)
  if kind == "out-trade-no" then
    local got = order.out_trade_no
    if got == nil then return "the answer names no order (no out_trade_no)" end
    if got ~= id then return differs("out_trade_no", got, id) end
  else
    local named = false
    for _, f in ipairs(TXID_FIELDS) do
      local got = order[f]
      if got ~= nil then
        named = true
        if got ~= id then return differs("transaction (" .. f .. ")", got, id) end
      end
    end
    if not named then return "the answer names no order (no transaction_id or id)" end
  end
  if c.mode == "common" then
    if order.mchid ~= nil and order.mchid ~= c.mchid then return differs("mchid", order.mchid, c.mchid) end
    for _, f in ipairs { "sp_mchid", "sub_mchid" } do
      if order[f] ~= nil then
        return ("the answer carries %s %s: an institution's order, not this client's (mchid %s)")
          :format(f, util.show(order[f]), util.show(c.mchid))
      end
    end
  else
    if order.sp_mchid ~= nil and order.sp_mchid ~= c.sp_mchid then
      return differs("sp_mchid", order.sp_mchid, c.sp_mchid)
    end
    if order.sub_mchid ~= nil and order.sub_mchid ~= sub then
      return differs("sub_mchid", order.sub_mchid, sub)
    end
    if order.mchid ~= nil then
      return ("the answer carries mchid %s: a common-mode order, not this institution's (sp_mchid %s)")
        :format(util.show(order.mchid), util.show(c.sp_mchid))
    end
  end
  if type(order.trade_state) ~= "string" or order.trade_state == "" then
    return "the answer has no trade_state"
  end
  return nil
end

function Orders:_query(kind, id, sub, opt)
  local r, err = self:_call("GET", self:_query_target(kind, id, sub), "", opt, 200)
  if not r then return nil, err end
  local order = util.json_decode(r.body)
  local fields = { status = r.status, request_id = r.headers["request-id"], base_url = r.base_url }
  if type(order) ~= "table" then
    return nil, errors.new(errors.BAD_RESPONSE, "the order query answer is not a JSON object", fields)
  end
  local why = Orders._binding_error(self, kind, id, sub, order)
  if why then
    self:_log("warn", "query answer refused", { request_id = fields.request_id, reason = why })
    return nil, errors.new(errors.BAD_RESPONSE, "signed query answer refused: " .. why, fields)
  end
  return order, meta_of(r)
end

--- client:revoke{transaction_id= | out_trade_no=, sub_mchid=?} -> true, meta | nil, err
function Orders:revoke(args)
  local kind, id, sub = self:_order_args(args, "revoke")
  if not kind then return nil, id end
  return self:_revoke(kind, id, sub)
end

--- client:query{transaction_id= | out_trade_no=, sub_mchid=?} -> order, meta | nil, err
function Orders:query(args)
  local kind, id, sub = self:_order_args(args, "query")
  if not kind then return nil, id end
  return self:_query(kind, id, sub)
end

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local REQUEST_FIELDS = { method = true, path = true, query = true, body = true }

--- client:request{method=, path=, query=?, body=?} -> {status, headers, body, raw}, meta
function Orders:request(args)
  if type(args) ~= "table" then util.raise("client:request expects a table, got " .. type(args)) end
  secrets.open(self)
  util.check_fields(args, REQUEST_FIELDS, "request", 2)
  local method, path, query, body = args.method, args.path, args.query, args.body
  if type(method) ~= "string" or not METHODS[method:upper()] then
    util.raise("request method must be one of GET, POST, PUT, PATCH, DELETE")
  end
  method = method:upper()
  if type(path) ~= "string" then util.raise("request path must be a string") end
  if not path:match("^/v3/[%w%-%._~!$&'()*+,;=:@/%%]*$") or not util.valid_pct(path)
    or util.has_dot_segment(path) then
    return util.invalid("path must start with /v3/ and hold only URL path characters "
      .. "(no . or .. segments), got " .. util.show(path))
  end
  local target = path
  if query ~= nil then
    local qs
    if type(query) == "table" then
      qs = util.encode_query(query)
    elseif type(query) == "string" then
      if query:find("[%s#%c]") then return util.invalid("query must not hold spaces, '#' or control bytes") end
      if not query:match("^[%w%-%._~!$&'()*+,;=:@/?%%]*$") or not util.valid_pct(query) then
        return util.invalid("query must hold only URL query characters (percent-encode the rest), got "
          .. util.show(query))
      end
      qs = query:gsub("^%?", "")
    else
      util.raise("request query must be a table or a string")
    end
    if qs ~= "" then target = target .. "?" .. qs end
  end
  if body == nil then
    body = ""
  elseif type(body) == "table" then
    local b, jerr = util.json_encode(body)
    if not b then return util.invalid("body cannot be encoded as JSON: " .. tostring(jerr)) end
    body = b
  elseif type(body) ~= "string" then
    util.raise("request body must be a table or a string")
  end
  if method == "GET" and body ~= "" then return util.invalid("a GET request has no body") end
  local r, err = self:_call(method, target, body)
  if not r then return nil, err end
  local decoded = r.body
  local ct = r.headers["content-type"] or ""
  if r.body ~= "" and (ct:find("json", 1, true) or r.body:match("^%s*[{%[]")) then
    local d = util.json_decode(r.body)
    if d ~= nil then decoded = d end
  end
  return { status = r.status, headers = r.headers, body = decoded, raw = r.body }, meta_of(r)
end


return Orders
