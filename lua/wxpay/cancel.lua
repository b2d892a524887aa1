--- client:cancel: drives a quick-pay order whose payment failed or is
-- unknown to a final state (REVOKED or CLOSED), following WeChat Pay's
-- guidance: wait 15 s after payment, never past 7 days, retry with backoff,
-- query before resending and to confirm.
-- Must not: report a final state that a verified answer did not give.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local util = require "wxpay.util"
local Verify = require "wxpay.verify"

local Cancel = {}

local now = core.time
local monotonic_ms = core.monotonic_ms
local CLOCK_SKEW = Verify.CLOCK_SKEW

local FINAL = { REVOKED = "REVOKED", CLOSED = "CLOSED" }
local CANCEL_FIELDS = { transaction_id = true, out_trade_no = true, sub_mchid = true,
  paid_at = true, deadline_ms = true }
local GIVE_UP = { TRADE_ERROR = true, REVERSE_EXPIRE = true, INVALID_TRANSACTIONID = true,
  PARAM_ERROR = true, ORDER_NOT_EXIST = true, RESOURCE_NOT_EXISTS = true, SIGN_ERROR = true,
  NO_AUTH = true, INVALID_REQUEST = true, CONFIG_ERROR = true, INVALID_ARGUMENT = true,
  TLS_ERROR = true }
local SEVEN_DAYS = 7 * 86400
local MIN_AGE = 15
local MIN_ATTEMPT_MS = 50

--- Every check cancel makes of its arguments, before anything is sent (also
-- revoke_many's with cancel = true, for every item before the first request).
-- Wrong Lua types raise; bad values give nil, INVALID_ARGUMENT (attempts = 0).
-- Returns {kind=, id=, sub=, paid_at=, deadline_ms=, fields=}.
function Cancel:_cancel_args(args, level)
  level = (level or 2) + 1
  local kind, id, sub = self:_order_args(args, "cancel", CANCEL_FIELDS)
  local paid_at, deadline_ms = args.paid_at, args.deadline_ms
  if paid_at ~= nil and type(paid_at) ~= "number" then
    util.raise("paid_at must be Unix seconds (a number), got " .. type(paid_at), level)
  end
  if deadline_ms ~= nil and type(deadline_ms) ~= "number" then
    util.raise("deadline_ms must be a number, got " .. type(deadline_ms), level)
  end
  local err
  if not kind then
    err = id
  elseif paid_at and paid_at ~= paid_at then
    err = select(2, util.invalid("paid_at is not a number"))
  elseif deadline_ms and (deadline_ms <= 0 or deadline_ms ~= deadline_ms) then
    err = select(2, util.invalid("deadline_ms must be positive"))
  elseif paid_at and now() - paid_at < -CLOCK_SKEW then
    err = errors.new(errors.INVALID_ARGUMENT, "paid_at is in the future (it is the Unix time "
      .. "in seconds of the payment call); nothing was sent")
  end
  if err then
    err.attempts = 0
    return nil, err
  end
  return { kind = kind, id = id, sub = sub, paid_at = paid_at, deadline_ms = deadline_ms or 60000,
    fields = { out_trade_no = args.out_trade_no, transaction_id = args.transaction_id } }
end

--- client:cancel{…, paid_at=?, deadline_ms=?} -> "REVOKED" | "CLOSED", info | nil, err
-- info = {confirmed=, attempts=, order=?, meta=, revoke_meta=?, query_error=?, trade_state=?}:
-- `meta` is the metadata of the answer that decided the result (the
-- confirming query, or the revoke's 204 when unconfirmed); `revoke_meta` that
-- of the accepted revoke when this call's revoke was accepted.
function Cancel:cancel(args)
  local a, err = self:_cancel_args(args)
  if not a then return nil, err end
  return self:_cancel(a)
end

--- The cancel flow for checked arguments (see _cancel_args); `limit_ms`, if
-- given, shortens deadline_ms (revoke_many's deadline for the batch).
function Cancel:_cancel(a, limit_ms)
  local kind, id, sub, paid_at, fields = a.kind, a.id, a.sub, a.paid_at, a.fields
  local deadline_ms = a.deadline_ms
  if limit_ms and limit_ms < deadline_ms then deadline_ms = limit_ms end

  local start = monotonic_ms()
  local deadline = start + deadline_ms
  local attempts = 0

  local function fail(err)
    err.attempts = attempts
    return nil, err
  end

  if paid_at then
    local age = now() - paid_at  -- not in the future: _cancel_args checked
    if age > SEVEN_DAYS then
      return fail(errors.new(errors.REVERSE_EXPIRE,
        "the payment is more than 7 days old: revoke is no longer possible, use the refund API"))
    end
    local wait = (MIN_AGE - age) * 1000
    if wait > 0 then
      if start + wait >= deadline then
        return fail(errors.new(errors.TIMEOUT, ("the revoke may not be sent before paid_at + %d s, "
          .. "which is past deadline_ms"):format(MIN_AGE)))
      end
      self:_log("info", "waiting before revoke (15 s after payment)", { ms = wait })
      self:_sleep(wait)
    end
  end

  local last_err, bad_sig = nil, 0
  local backoff = 500
  while true do
    local left = deadline - monotonic_ms()
    if left < MIN_ATTEMPT_MS then break end -- too little time left to be worth a request
    attempts = attempts + 1
    self:_log("info", "revoke attempt", { attempt = attempts, out_trade_no = fields.out_trade_no,
      transaction_id = fields.transaction_id })
    local ok, err = self:_revoke(kind, id, sub, { timeout_ms = left })
    if ok then
      local revoke_meta = err -- the second value of a success is its meta
      -- the revoke was verified; ask which final state it produced
      local left2 = deadline - monotonic_ms()
      local order, qerr = self:_query(kind, id, sub, { timeout_ms = math.max(left2, 1000) })
      local state = order and FINAL[order.trade_state]
      if state then
        return state, { confirmed = true, attempts = attempts, order = order, meta = qerr,
          revoke_meta = revoke_meta }
      end
      if order then qerr = nil end
      self:_log("warn", "revoke succeeded but the final state is unconfirmed",
        { code = qerr and qerr.code, message = qerr and qerr.message, trade_state = order and order.trade_state })
      return "REVOKED", { confirmed = false, attempts = attempts, query_error = qerr,
        trade_state = order and order.trade_state, meta = revoke_meta, revoke_meta = revoke_meta }
    end
    last_err = err
    self:_log("warn", "revoke failed", { attempt = attempts, code = err.code, status = err.status,
      request_id = err.request_id, verified = err.verified })
    if err.code == errors.BAD_SIGNATURE then bad_sig = bad_sig + 1 end
    local unverified = err.verified == false or err.code == errors.BAD_SIGNATURE
      or err.code == errors.BAD_RESPONSE
    if (GIVE_UP[err.code] and err.verified ~= false) or bad_sig >= 2 then
      return fail(err)
    end
    if not (err.retryable or unverified) then return fail(err) end
    -- the revoke may or may not have happened: ask before sending it again
    local qleft = deadline - monotonic_ms()
    if qleft <= 0 then break end
    local order, qinfo = self:_query(kind, id, sub, { timeout_ms = qleft })
    local qmeta, qerr = order and qinfo or nil, (not order) and qinfo or nil
    local state = order and FINAL[order.trade_state]
    if state then
      return state, { confirmed = true, attempts = attempts, order = order, meta = qmeta }
    end
    if qerr then
      self:_log("warn", "query before resending failed", { attempt = attempts, code = qerr.code,
        status = qerr.status, request_id = qerr.request_id, verified = qerr.verified })
    else
      self:_log("info", "order not final yet", { trade_state = order and order.trade_state })
    end
    local pause = backoff * (0.5 + math.random() * 0.5)
    backoff = math.min(backoff * 2, 8000)
    if monotonic_ms() + pause >= deadline then break end
    self:_log("info", "retrying revoke", { after_ms = pause, attempt = attempts + 1 })
    self:_sleep(pause)
  end
  last_err = last_err or errors.new(errors.TIMEOUT, "deadline_ms passed before the order was final")
  if last_err.code ~= errors.TIMEOUT then
    last_err.message = last_err.message .. " (deadline_ms passed)"
  end
  return fail(last_err)
end


Cancel.FIELDS = CANCEL_FIELDS
return Cancel
