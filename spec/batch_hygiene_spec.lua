-- revoke_many hygiene (issue 13 §1): an answer reaches only the call that sent
-- its request, every exit path leaves the client usable with nothing in
-- flight, and every item is validated before anything is sent.
local H = require "helpers"

local sb

local function paid(prefix)
  return sb:order { out_trade_no = H.order_no(prefix), trade_state = "SUCCESS" }.out_trade_no
end

-- A progress callback that raises on its first call.
local function boom() error("progress callback failed", 0) end

describe("revoke_many hygiene", function()
  setup(function() sb = H.sandbox("batch-hygiene") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  it("a raising progress callback: the error reaches the caller, the next batch gets only its own answers", function()
    local c = sb:client()
    local a, b = paid("A"), paid("B")
    sb:fault { fault = "delay", ms = 1000, match = a .. "/reverse" }
    local ok, err = pcall(c.revoke_many, c, { { out_trade_no = a }, { out_trade_no = b } },
      { concurrency = 2, progress = boom })
    assert.is_false(ok)
    assert.matches("progress callback failed", tostring(err))
    -- batch 2: a non-existent order and a paid one, both slower than A's leftover answer
    local ghost, d = "NEVER-MADE-" .. H.order_no("G"), paid("D")
    sb:fault { fault = "delay", ms = 2500, match = ghost .. "/reverse" }
    sb:fault { fault = "delay", ms = 2500, match = d .. "/reverse" }
    local res = c:revoke_many({ { out_trade_no = ghost }, { out_trade_no = d } }, { concurrency = 2 })
    assert.is_table(res[1])
    assert.equal("ORDER_NOT_EXIST", res[1].code)
    assert.is_true(res[2])
    -- the client stays usable, single calls included
    local e = paid("E")
    assert.is_true((c:revoke { out_trade_no = e }))
    assert.same({ true }, c:revoke_many({ { out_trade_no = paid("F") } }))
    c:close()
  end)

  it("random latency: a non-existent order is never reported revoked (8 runs)", function()
    local c = sb:client()
    math.randomseed(os.time())
    for run = 1, 8 do
      local list = {}
      for i = 1, 4 do
        list[i] = { out_trade_no = paid("R" .. run) }
        sb:fault { fault = "delay", ms = math.random(0, 400), match = list[i].out_trade_no .. "/reverse" }
      end
      local stop_at = math.random(1, 3)
      local ok = pcall(c.revoke_many, c, list, { concurrency = 4, progress = function(done)
        if done == stop_at then error("stop", 0) end
      end })
      assert.is_false(ok)
      local ghost = "NEVER-MADE-" .. H.order_no("G")
      sb:fault { fault = "delay", ms = math.random(0, 400), match = ghost .. "/reverse" }
      local list2 = { { out_trade_no = ghost } }
      for i = 2, 4 do list2[i] = { out_trade_no = paid("S" .. run) } end
      local res = c:revoke_many(list2, { concurrency = 4 })
      assert.equal("ORDER_NOT_EXIST", type(res[1]) == "table" and res[1].code or tostring(res[1]), "run " .. run)
      for i = 2, 4 do assert.is_true(res[i], "run " .. run .. " item " .. i) end
    end
    c:close()
  end)

  it("a raising progress callback leaves nothing in flight: leftover revokes are not performed later", function()
    local c = sb:client()
    local a, b = paid("A"), paid("B")
    sb:fault { fault = "delay", ms = 600, match = a .. "/reverse" }
    assert.is_false((pcall(c.revoke_many, c, { { out_trade_no = b }, { out_trade_no = a } },
      { concurrency = 2, progress = boom })))
    -- the server got A's request already (and applies it after its delay); the
    -- client must have dropped the transfer, so the next call never sees it
    require("wxpay.core").sleep_ms(200) -- let anything still travelling arrive first
    local before = sb:stats().revokes
    assert.same({ true }, c:revoke_many({ { out_trade_no = paid("C") } }, { concurrency = 2 }))
    assert.equal(before + 1, sb:stats().revokes)
    assert.is_nil(c._batch)
    c:close()
  end)

  it("cancel mode: a wrong-typed paid_at or deadline_ms raises before anything is sent", function()
    local c = sb:client()
    local a = paid("A")
    local before = sb:stats().requests
    -- one at a time: A would be done before the bad item is reached
    assert.has_error(function()
      c:revoke_many({ { out_trade_no = a }, { out_trade_no = paid("B"), paid_at = "yesterday" } },
        { cancel = true, concurrency = 1 })
    end)
    -- all at once: A's request would be queued before the bad item raises
    assert.has_error(function()
      c:revoke_many({ { out_trade_no = a }, { out_trade_no = paid("B"), deadline_ms = "5s" } }, { cancel = true })
    end)
    assert.equal(before, sb:stats().requests)
    assert.equal("SUCCESS", sb:get_order(a).trade_state)
    assert.is_nil(c._batch)
    -- and nothing queued by the failed calls goes out with the next one
    local x = paid("X")
    assert.same({ "REVOKED" }, c:revoke_many({ { out_trade_no = x } }, { cancel = true }))
    assert.equal("SUCCESS", sb:get_order(a).trade_state)
    assert.equal(before + 2, sb:stats().requests)
    c:close()
  end)

  it("cancel mode: a bad value is that item's INVALID_ARGUMENT and the others run", function()
    local c = sb:client()
    local a, b, d = paid("A"), paid("B"), paid("D")
    local before = sb:stats().requests
    local res = c:revoke_many({
      { out_trade_no = a },
      { out_trade_no = b, paid_at = os.time() + 3600 },  -- in the future
      { out_trade_no = d, deadline_ms = 0 / 0 },
      { out_trade_no = "bad/one" },
    }, { cancel = true, concurrency = 4 })
    assert.equal("REVOKED", res[1])
    for i = 2, 4 do assert.equal("INVALID_ARGUMENT", res[i].code, i) end
    assert.equal("SUCCESS", sb:get_order(b).trade_state)
    assert.equal("SUCCESS", sb:get_order(d).trade_state)
    assert.equal(2, sb:stats().requests - before) -- A's revoke and its confirming query
    c:close()
  end)
end)
