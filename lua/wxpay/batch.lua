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
-- Must not: deliver an answer to any call but the one that sent its request.
local core = require "wxpay.core"
local util = require "wxpay.util"
local transport = require "wxpay.transport"
local secrets = require "wxpay.secrets"
local Cancel = require "wxpay.cancel"

local Batch = {}

local yield = coroutine.yield

-- The transport and sleep the client uses inside a scheduler coroutine.
local batch_hooks = {
  request = function(req) return yield("http", req) end,
  sleep_ms = function(ms) return yield("sleep", ms) end,
}

-- Runs `workers` coroutines of `worker` over one multi handle until all end.
local function run_with_multi(client, multi, workers, worker)
  local by_id, next_id = {}, 0
  local sleepers = {}
  local failure

  local function step(co, ...)
    local ok, what, arg = coroutine.resume(co, ...)
    if not ok then
      failure = failure or what
      return
    end
    if coroutine.status(co) == "dead" then return end
    if what == "http" then
      next_id = next_id + 1
      local added, aerr = multi:add(next_id, arg.method, arg.url, transport.header_lines(arg.headers), arg.body,
        arg.timeout_ms, arg.connect_timeout_ms)
      if added then
        by_id[next_id] = co
      else
        return step(co, nil, { code = "NETWORK_ERROR", message = tostring(aerr), sent = false })
      end
    elseif what == "sleep" then
      sleepers[#sleepers + 1] = { co = co, at = core.monotonic_ms() + arg }
    else
      failure = failure or "wxpay: unexpected yield inside revoke_many: " .. tostring(what)
    end
  end

  client._batch = batch_hooks
  for _ = 1, workers do step(coroutine.create(worker)) end
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
        if r.status then step(co, r) else step(co, nil, r) end -- the transport's shapes already
      end
    end
  end
  client._batch = nil
  if failure then error(failure, 0) end
end

local function run_with_threads(workers, worker)
  local ngx = rawget(_G, "ngx")
  local threads = {}
  for i = 1, workers do threads[i] = ngx.thread.spawn(worker) end
  for i = 1, workers do
    local ok, err = ngx.thread.wait(threads[i])
    if not ok then error(err, 0) end
  end
end

--- Runs one(item) for every item, `concurrency` at a time; returns the results
-- in input order and calls progress(done, total, index, result) as they end.
local function run(client, list, opts, one)
  local n = #list
  local results = {}
  local concurrency = opts.concurrency or 16
  local progress = opts.progress
  local done, next_i = 0, 0

  local function worker()
    while true do
      next_i = next_i + 1
      local i = next_i
      if i > n then return end
      local res, err = one(list[i])
      if res == nil then res = err end
      results[i] = res
      done = done + 1
      if progress then progress(done, n, i, res) end
    end
  end

  local workers = math.min(concurrency, n)
  if workers == 0 then return results end
  local tr = client.transport
  if type(tr) == "function" then
    worker()
  elseif tr == "cosocket" or (tr == "auto" and transport.cosocket_phase()) then
    run_with_threads(workers, worker)
  else
    local multi = client._multi
    if not multi or client._multi_size ~= concurrency then
      if multi then multi:close() end
      local err
      multi, err = core.multi {
        ca_file = client.ca_file, timeout_ms = client.timeout_ms,
        connect_timeout_ms = client.connect_timeout_ms, max_body = client.max_body,
        max_parallel = concurrency, max_idle_s = 7, proxy = client.proxy,
      }
      if not multi then error("wxpay: cannot start the batch: " .. tostring(err), 0) end
      client._multi, client._multi_size = multi, concurrency
    end
    run_with_multi(client, multi, workers, worker)
  end
  return results
end

--- client:revoke_many(list, {concurrency = 16, cancel = false, progress = fn})
-- -> results in input order: true (or "REVOKED"/"CLOSED" with cancel) or the error.
-- Every item is validated before anything is sent; an invalid one gets its
-- INVALID_ARGUMENT error and the others still run.
function Batch:revoke_many(list, opts)
  if type(list) ~= "table" then util.raise("client:revoke_many expects a list of call tables") end
  if opts ~= nil and type(opts) ~= "table" then util.raise("revoke_many options must be a table") end
  opts = opts or {}
  util.check_fields(opts, { concurrency = true, cancel = true, progress = true }, "revoke_many options", 2)
  local c = opts.concurrency or 16
  if type(c) ~= "number" or c < 1 or c > 64 or c % 1 ~= 0 then
    util.raise("concurrency must be a whole number from 1 to 64")
  end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then util.raise("progress must be a function") end
  secrets.open(self)
  local jobs = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" then util.raise(("revoke_many item %d must be a table"):format(i)) end
    if opts.cancel then
      local kind, err = self:_order_args(item, "cancel", Cancel.FIELDS)
      jobs[i] = kind and { call = item } or { err = err }
    else
      local kind, id, sub = self:_order_args(item, "revoke")
      jobs[i] = kind and { kind = kind, id = id, sub = sub } or { err = id }
    end
  end
  local ok, kerr = self:_ensure_keys()
  if not ok then
    local out = {}
    for i, j in ipairs(jobs) do out[i] = j.err or kerr end
    return out
  end
  local one
  if opts.cancel then
    one = function(j) if j.err then return nil, j.err end return self:cancel(j.call) end
  else
    one = function(j) if j.err then return nil, j.err end return self:_revoke(j.kind, j.id, j.sub) end
  end
  return run(self, jobs, { concurrency = c, progress = opts.progress }, one)
end


return Batch
