-- Pacing of revoke requests to WeChat's per-merchant rate limit (issue 17,
-- Batches), and revoke_many's retry of a rate-limited item. Small rates keep
-- the specs short; the sandbox's rate-limit mode is the real WeChat rule
-- (429 RATELIMIT_EXCEEDED above N requests in any sliding second).
local H = require "helpers"
local core = require "wxpay.core"

local sb

local function paid_list(n, prefix)
  local list = {}
  for i = 1, n do
    list[i] = { out_trade_no = sb:order { out_trade_no = H.order_no(prefix), trade_state = "SUCCESS" }.out_trade_no }
  end
  return list
end

-- A client of the sandbox with this `rate` (false included: sb:options drops false fields).
local function client(rate, mode)
  local o = sb:options(nil, mode)
  o.rate = rate
  return assert(require("wxpay").new(o))
end

-- Arrival times (s) of the revoke requests the sandbox logged since `since`.
local function revoke_times(since)
  local t = {}
  for _, r in ipairs(sb:requests()) do
    if r.method == "POST" and r.target:find("/reverse", 1, true) and r.time >= since then t[#t + 1] = r.time end
  end
  table.sort(t)
  return t
end

describe("pacing", function()
  setup(function() sb = H.sandbox("pace") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  it("spreads a batch under the server's limit: 120 orders at 50/s, all revoked, no 429", function()
    assert.equal(200, (sb:control("POST", "/ratelimit", { per_second = 50 })))
    local c = client(50)
    local list = paid_list(120, "P")
    local t0 = core.monotonic_ms()
    local res = c:revoke_many(list, { concurrency = 16 })
    local secs = (core.monotonic_ms() - t0) / 1000
    for i = 1, #list do assert.is_true(res[i], i) end
    local st = sb:stats()
    assert.equal(0, st.ratelimited)
    assert.equal(120, st.revokes)
    -- 120 slots 1/50 s apart (plus the 2 % margin) take at least 2.4 s
    assert.is_true(secs >= 2.3, ("%.2f s"):format(secs))
    assert.is_true(secs < 6, ("%.2f s"):format(secs))
    c:close()
  end)

  it("without pacing the same server answers 429, which revoke_many retries until every item is true", function()
    assert.equal(200, (sb:control("POST", "/ratelimit", { per_second = 50 })))
    local c = client(false)
    local list = paid_list(80, "Q")
    local res = c:revoke_many(list, { concurrency = 16 })
    for i = 1, #list do assert.is_true(res[i], i) end
    local st = sb:stats()
    assert.is_true(st.ratelimited > 0, "rate = false must send faster than the limit")
    assert.equal(80 + st.ratelimited, st.revokes)
    c:close()
  end)

  it("a forced 429 is retried after a pause and the item ends true; past deadline_ms it is the result", function()
    local c = client(false)
    local list = paid_list(3, "R")
    sb:fault { fault = "status", status = 429, code = "RATELIMIT_EXCEEDED", match = list[2].out_trade_no, count = 2 }
    local t0 = core.monotonic_ms()
    local res = c:revoke_many(list, { concurrency = 3 })
    assert.same({ true, true, true }, res)
    assert.is_true(core.monotonic_ms() - t0 >= 200 + 400 - 5, "two pauses of at least 200 and 400 ms")
    assert.equal(5, sb:stats().revokes)
    assert.equal("REVOKED", sb:get_order(list[2].out_trade_no).trade_state)
    -- no time left for another try: the 429 is the item's result, the others run
    local more = paid_list(2, "S")
    sb:fault { fault = "status", status = 429, code = "RATELIMIT_EXCEEDED", match = more[1].out_trade_no, count = 50 }
    res = c:revoke_many(more, { concurrency = 2, deadline_ms = 300 })
    assert.equal("RATELIMIT_EXCEEDED", res[1].code)
    assert.matches("deadline_ms passed", res[1].message)
    assert.is_true(res[2])
    assert.equal("SUCCESS", sb:get_order(more[1].out_trade_no).trade_state)
    sb:control("DELETE", "/faults")
    c:close()
  end)

  it("paces single revokes, and two clients of one merchant share one pace", function()
    local c1, c2 = client(20), client(20)
    local list = paid_list(12, "T")
    local since = os.time() - 1
    local t0 = core.monotonic_ms()
    for i = 1, 12 do
      local c = i % 2 == 0 and c2 or c1
      assert.is_true((c:revoke(list[i])))
    end
    local secs = (core.monotonic_ms() - t0) / 1000
    -- 12 requests 1/20 s apart: 11 gaps of 51 ms
    assert.is_true(secs >= 0.54, ("%.3f s"):format(secs))
    local t = revoke_times(since)
    assert.equal(12, #t)
    -- sent 51 ms apart; arrivals jitter by a handshake or a busy core, but two
    -- separate paces would let every other request follow its neighbour at once
    for i = 2, #t do
      assert.is_true(t[i] - t[i - 1] >= 0.020, ("gap %d: %.3f s"):format(i, t[i] - t[i - 1]))
    end
    assert.is_true(t[#t] - t[1] >= 0.9 * 11 * 0.051, ("span %.3f s"):format(t[#t] - t[1]))
    -- a client of another merchant is not held back by them
    local other = client(20, "institutional")
    local o = sb:order { out_trade_no = H.order_no("U"), trade_state = "SUCCESS",
      sp_mchid = sb.cfg.sp_mchid, sub_mchid = sb.cfg.sub_mchid }
    assert.is_true((c1:revoke(paid_list(1, "V")[1]))) -- takes c1's merchant's next slot
    local t1 = core.monotonic_ms()
    assert.is_true((other:revoke { out_trade_no = o.out_trade_no }))
    assert.is_true(core.monotonic_ms() - t1 < 45, "another merchant's pace is its own")
    c1:close(); c2:close(); other:close()
  end)

  it("rate = false sends single revokes back to back", function()
    local c = client(false)
    local list = paid_list(12, "W")
    local t0 = core.monotonic_ms()
    for i = 1, 12 do assert.is_true((c:revoke(list[i]))) end
    -- paced at the default 150/s these would take 11 x 6.8 ms = 75 ms at least;
    -- at 20/s 560 ms: unpaced they take a few ms each
    assert.is_true(core.monotonic_ms() - t0 < 500)
    c:close()
  end)

  it("cancel's revokes are paced too (queries are not: WeChat's limit is on the revoke API)", function()
    local c = client(10)
    local list = paid_list(4, "X")
    local since = os.time() - 1
    local res = c:revoke_many(list, { cancel = true, concurrency = 4 })
    assert.same({ "REVOKED", "REVOKED", "REVOKED", "REVOKED" }, res)
    local t = revoke_times(since)
    assert.equal(4, #t)
    -- sent 102 ms apart (0.306 s from first to last); the first arrival can lag by
    -- a TLS handshake the others do not pay, so only ~0.2 s is certain on arrival.
    -- Unpaced, four workers' revokes arrive within a few ms of each other.
    assert.is_true(t[4] - t[1] >= 0.15, ("%.3f s: %s"):format(t[4] - t[1], table.concat(t, " ")))
    assert.equal(4, sb:stats().queries)
    c:close()
  end)

  it("bad rate values are CONFIG_ERROR", function()
    local wxpay = require "wxpay"
    for _, bad in ipairs { 0, -5, 0 / 0, math.huge, "150", true, {} } do
      local c, err = wxpay.new(sb:options { rate = bad })
      assert.is_nil(c, tostring(bad))
      assert.equal("CONFIG_ERROR", err.code, tostring(bad))
      assert.matches("rate", err.message)
    end
    assert.is_truthy(wxpay.new(sb:options { rate = 0.5 }))
  end)
end)
