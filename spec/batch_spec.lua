-- client:revoke_many: many orders at once over one libcurl multi handle.
local H = require "helpers"

local sb

describe("revoke_many", function()
  setup(function() sb = H.sandbox("batch") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  it("revokes 40 orders with concurrency 8, results in input order, bad items isolated", function()
    local c = sb:client()
    local list, states = {}, {}
    for i = 1, 40 do
      local state = i % 2 == 0 and "SUCCESS" or "NOTPAY"
      local o = sb:order { out_trade_no = H.order_no("B"), trade_state = state }
      list[i], states[i] = { out_trade_no = o.out_trade_no }, state
    end
    list[41] = { out_trade_no = "bad/one" }
    list[42] = { out_trade_no = "NEVER-MADE-B" }
    local seen, last_done = {}, 0
    local before = sb:stats()
    local res = c:revoke_many(list, { concurrency = 8, progress = function(done, total, i, r)
      assert.equal(42, total)
      assert.equal(last_done + 1, done)
      last_done = done
      seen[i] = r
    end })
    assert.equal(42, last_done)
    for i = 1, 40 do
      assert.is_true(res[i], i)
      assert.equal(res[i], seen[i])
      local o = sb:get_order(list[i].out_trade_no)
      assert.equal(states[i] == "SUCCESS" and "REVOKED" or "CLOSED", o.trade_state)
    end
    assert.equal("INVALID_ARGUMENT", res[41].code)
    assert.equal("ORDER_NOT_EXIST", res[42].code)
    local after = sb:stats()
    assert.equal(41, after.requests - before.requests) -- the invalid item sent nothing
    assert.is_true(after.handshakes - before.handshakes <= 8)
    assert.equal(20, after.refunds - before.refunds)
  end)

  it("verifies every answer: a forged one is BAD_SIGNATURE, never true", function()
    local c = sb:client()
    local list = {}
    for i = 1, 6 do
      list[i] = { out_trade_no = sb:order { out_trade_no = H.order_no("F"), trade_state = "SUCCESS" }.out_trade_no }
    end
    sb:fault { fault = "flip_signature", match = list[3].out_trade_no }
    local res = c:revoke_many(list, { concurrency = 3 })
    for i = 1, 6 do
      if i == 3 then assert.equal("BAD_SIGNATURE", res[i].code) else assert.is_true(res[i]) end
    end
  end)

  it("runs cancel for each item with cancel = true", function()
    local c = sb:client()
    local p = sb:order { out_trade_no = H.order_no("P"), trade_state = "SUCCESS" }
    local u = sb:order { out_trade_no = H.order_no("U"), trade_state = "NOTPAY" }
    sb:fault { fault = "apply_then_status", status = 500, code = "SYSTEM_ERROR", match = p.out_trade_no .. "/reverse" }
    local res = c:revoke_many({ { out_trade_no = p.out_trade_no }, { out_trade_no = u.out_trade_no } },
      { cancel = true, concurrency = 2 })
    assert.same({ "REVOKED", "CLOSED" }, res)
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("raises on wrong types, before sending anything", function()
    local c = sb:client()
    local before = sb:stats().requests
    assert.has_error(function() c:revoke_many("x") end)
    assert.has_error(function() c:revoke_many({ { out_trade_no = "A" }, "B" }) end)
    assert.has_error(function() c:revoke_many({ { out_trade_no = 5 } }) end)
    assert.has_error(function() c:revoke_many({}, { concurrency = 0 }) end)
    assert.has_error(function() c:revoke_many({}, { concurency = 2 }) end)
    assert.same({}, c:revoke_many({}))
    assert.equal(before, sb:stats().requests)
  end)
end)
