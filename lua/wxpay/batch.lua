--- client:revoke_many: many orders at once.
--
-- Each item runs the ordinary single-call code (the same signing and
-- verification) in a worker; `concurrency` workers share the list.
-- * In an nginx request context the workers are ngx.thread light threads on
--   cosockets.
-- * Elsewhere they are coroutines whose HTTP requests and waits yield to a
--   small scheduler driving one libcurl multi handle (one connection cache);
--   C never calls back into Lua.
-- * With a user transport function the items run one after another.
-- Revokes are paced by wxpay.pace (in Orders:_revoke) and a rate-limited one
-- is sent again after a pause while the batch's deadline_ms allows.
-- Must not: deliver an answer to any call but the one that sent its request,
-- send anything before every item is checked, or leave anything in flight
-- (or client._batch set) when it returns or raises.
local core = require "wxpay.core"
local util = require "wxpay.util"
local transport = require "wxpay.transport"
local secrets = require "wxpay.secrets"
local errors = require "wxpay.errors"

local Batch = {}

local monotonic_ms = core.monotonic_ms
local OPTION_FIELDS = { concurrency = true, cancel = true, progress = true, deadline_ms = true }
local DEFAULT_DEADLINE_MS = 60000
local MIN_ATTEMPT_MS = 50  -- an item with less time than this left is not sent

local yield = coroutine.yield

-- The transport and sleep the client uses inside a scheduler coroutine.
local batch_hooks = {
  request = function(req) return yield("http", req) end,
  sleep_ms = function(ms) return yield("sleep", ms) end,
}

-- Runs `workers` coroutines of `worker` over one multi handle until all end.
-- Transfer ids come from a counter that lives as long as the handle
-- (client._multi_seq), so an id is never given twice; any exit with work
-- still in the handle (an error anywhere: a worker, the caller's progress
-- callback, this loop) aborts every transfer before the error is passed on,
-- so nothing of this run can reach a later one.
local function run_with_multi(client, multi, workers, worker)
  local by_id = {} -- transfer id -> the coroutine that sent it
  local sleepers = {}
  local failure

  local function step(co, ...)
    -- only a coroutine waiting for exactly this is ever resumed
    if co == nil or coroutine.status(co) ~= "suspended" then return end
    local ok, what, arg = coroutine.resume(co, ...)
    if not ok then
      failure = failure or what
      return
    end
    if coroutine.status(co) == "dead" then return end
    if what == "http" then
      local id = client._multi_seq + 1
      client._multi_seq = id
      local added, aerr = multi:add(id, arg.method, arg.url, arg.headers, arg.body,
        arg.timeout_ms, arg.connect_timeout_ms)
      if added then
        by_id[id] = co
      else
        return step(co, nil, { code = "NETWORK_ERROR", message = tostring(aerr), sent = false })
      end
    elseif what == "sleep" then
      sleepers[#sleepers + 1] = { co = co, at = core.monotonic_ms() + arg }
    else
      failure = failure or "wxpay: unexpected yield inside revoke_many: " .. tostring(what)
    end
  end

  local function loop()
    for _ = 1, workers do
      if failure then return end
      step(coroutine.create(worker))
    end
    while not failure do
      local active = multi:active()
      if active == 0 and #sleepers == 0 then break end
      -- the nearest wake-up
      local now, soonest, si = core.monotonic_ms(), nil, nil
      for i, s in ipairs(sleepers) do
        if not soonest or s.at < soonest then soonest, si = s.at, i end
      end
      if soonest and soonest <= now then
        local s = table.remove(sleepers, si)
        step(s.co)
      elseif active == 0 then
        core.sleep_ms(soonest - now)
      else
        local wait = soonest and math.max(1, math.ceil(soonest - now)) or 0
        for _, r in ipairs(multi:run(wait)) do
          local co = by_id[r.id]
          by_id[r.id] = nil
          if failure then break end
          if r.status then step(co, r) else step(co, nil, r) end -- the transport's shapes already
        end
      end
    end
  end

  client._batch = batch_hooks
  local ok, err = pcall(loop)
  client._batch = nil
  if not ok then failure = failure or err end
  if failure or next(by_id) ~= nil then
    -- transfers may be left in the handle: none may outlive this call
    if multi.abort then
      multi:abort()
    else
      multi:close()
      if client._multi == multi then client._multi = nil end
    end
  end
  if failure then error(failure, 0) end
end

-- Light threads on cosockets. A thread that fails stops the others from
-- taking new items; they finish the request they are in (a cosocket cannot
-- be taken back mid-request) and then the error is passed on.
local function run_with_threads(workers, worker, state)
  local ngx = rawget(_G, "ngx")
  local failure
  local function guarded()
    local ok, err = pcall(worker)
    if not ok then
      failure = failure or err
      state.stopped = true
    end
  end
  local threads = {}
  for i = 1, workers do threads[i] = ngx.thread.spawn(guarded) end
  for i = 1, workers do
    local ok, err = ngx.thread.wait(threads[i])
    if not ok then failure = failure or err end
  end
  if failure then error(failure, 0) end
end

--- Runs one(item) for every item, `concurrency` at a time; returns the results
-- in input order and calls progress(done, total, index, result) as they end.
local function run(client, list, opts, one)
  local n = #list
  local results = {}
  local concurrency = opts.concurrency or 16
  local progress = opts.progress
  local done, next_i = 0, 0
  local state = { stopped = false }

  local function worker()
    while not state.stopped do
      next_i = next_i + 1
      local i = next_i
      if i > n then return end
      local res, err = one(list[i])
      if res == nil then res = err end
      results[i] = res
      done = done + 1
      if progress then
        local ok, perr = pcall(progress, done, n, i, res)
        if not ok then
          state.stopped = true
          error(perr, 0)
        end
      end
    end
  end

  local workers = math.min(concurrency, n)
  if workers == 0 then return results end
  local tr = client.transport
  if type(tr) == "function" then
    worker()
  elseif tr == "cosocket" or (tr == "auto" and transport.cosocket_phase()) then
    run_with_threads(workers, worker, state)
  else
    local multi = client._multi
    if not multi or client._multi_size ~= concurrency then
      if multi then multi:close() end
      client._multi = nil
      local err
      multi, err = core.multi {
        ca_file = client.ca_file, timeout_ms = client.timeout_ms,
        connect_timeout_ms = client.connect_timeout_ms, max_body = client.max_body,
        max_parallel = concurrency, max_idle_s = 7, proxy = client.proxy,
      }
      if not multi then error("wxpay: cannot start the batch: " .. tostring(err), 0) end
      client._multi, client._multi_size, client._multi_seq = multi, concurrency, 0
    end
    run_with_multi(client, multi, workers, worker)
  end
  return results
end

-- Plain mode: one revoke, sent again after a pause while WeChat answers
-- RATELIMIT_EXCEEDED (such an answer applied nothing) and time is left.
local function revoke_paced(client, j, deadline)
  local pause, last = 200, nil
  while true do
    local left = deadline - monotonic_ms()
    if left < MIN_ATTEMPT_MS then break end
    local ok, err = client:_revoke(j.kind, j.id, j.sub, { timeout_ms = left })
    if ok then return true end
    if err.code ~= errors.RATELIMIT_EXCEEDED then return nil, err end
    last = err
    local p = math.min(pause * (1 + 0.5 * math.random()), 1000)
    pause = pause * 2
    if monotonic_ms() + p + MIN_ATTEMPT_MS > deadline then break end
    client:_log("info", "rate limited: revoke sent again after a pause", { after_ms = p,
      out_trade_no = j.out_trade_no, transaction_id = j.transaction_id, request_id = err.request_id })
    client:_sleep(p)
  end
  if last then
    last.message = last.message .. " (deadline_ms passed)"
    return nil, last
  end
  return nil, errors.new(errors.TIMEOUT, "revoke_many's deadline_ms passed before this item was sent",
    { sent = false })
end

--- client:revoke_many(list, {concurrency = 16, cancel = false, progress = fn, deadline_ms = 60000})
-- -> results in input order: true (or "REVOKED"/"CLOSED" with cancel) or the error.
-- Every item is validated completely before anything is sent: a wrong Lua
-- type anywhere raises (nothing sent), a bad value is that item's
-- INVALID_ARGUMENT and the others still run. deadline_ms is for the whole
-- batch, from this call: rate-limited revokes are sent again until it passes;
-- with cancel it also caps each item's own deadline_ms.
function Batch:revoke_many(list, opts)
  if type(list) ~= "table" then util.raise("client:revoke_many expects a list of call tables") end
  if opts ~= nil and type(opts) ~= "table" then util.raise("revoke_many options must be a table") end
  opts = opts or {}
  util.check_fields(opts, OPTION_FIELDS, "revoke_many options", 2)
  local c = opts.concurrency or 16
  if type(c) ~= "number" or c < 1 or c > 64 or c % 1 ~= 0 then
    util.raise("concurrency must be a whole number from 1 to 64")
  end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then util.raise("progress must be a function") end
  local deadline_ms = opts.deadline_ms or DEFAULT_DEADLINE_MS
  if type(deadline_ms) ~= "number" or deadline_ms ~= deadline_ms or deadline_ms <= 0 or deadline_ms == math.huge then
    util.raise("deadline_ms must be a positive number of milliseconds")
  end
  local start = monotonic_ms()
  secrets.open(self)
  local jobs = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" then util.raise(("revoke_many item %d must be a table"):format(i)) end
    if opts.cancel then
      local a, err = self:_cancel_args(item, 2)
      jobs[i] = a and { args = a } or { err = err }
    else
      local kind, id, sub = self:_order_args(item, "revoke")
      jobs[i] = kind and { kind = kind, id = id, sub = sub, out_trade_no = item.out_trade_no,
        transaction_id = item.transaction_id } or { err = id }
    end
  end
  local ok, kerr = self:_ensure_keys()
  if not ok then
    local out = {}
    for i, j in ipairs(jobs) do out[i] = j.err or kerr end
    return out
  end
  local deadline = start + deadline_ms
  local one
  if opts.cancel then
    one = function(j)
      if j.err then return nil, j.err end
      return self:_cancel(j.args, deadline - monotonic_ms())
    end
  else
    one = function(j)
      if j.err then return nil, j.err end
      return revoke_paced(self, j, deadline)
    end
  end
  return run(self, jobs, { concurrency = c, progress = opts.progress }, one)
end


return Batch
