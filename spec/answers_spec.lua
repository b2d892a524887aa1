-- Issue 13 §2 and issue 16 item 6: an answer counts only for the request it
-- answers (order, merchant, trade_state), a signed answer counts once (nonce
-- replay refusal, for every client of the process and for the certificate
-- download), and success returns the verified answer's metadata.
local wxpay = require "wxpay"
local H = require "helpers"

local errors = wxpay.errors
local sb, client, inst

local function new_order(fields)
  local f = { out_trade_no = H.order_no("A"), trade_state = "SUCCESS" }
  for k, v in pairs(fields or {}) do f[k] = v end
  return sb:order(f)
end

local function bad_response(res, err, pattern)
  assert.is_nil(res)
  assert.is_table(err)
  assert.equal(errors.BAD_RESPONSE, err.code, tostring(err))
  if pattern then assert.matches(pattern, err.message) end
end

describe("answers bound to their requests", function()
  setup(function()
    sb = H.sandbox("answers")
    client = sb:client()
    inst = sb:client(nil, "institutional")
  end)
  teardown(function() client:close() inst:close() sb:stop() end)
  before_each(function() sb:control("DELETE", "/faults") end)

  it("a query answer naming another out_trade_no is BAD_RESPONSE", function()
    local o = new_order()
    sb:fault { fault = "wrong_order", field = "out_trade_no", match = o.out_trade_no }
    local order, err = client:query { out_trade_no = o.out_trade_no }
    bad_response(order, err, "out_trade_no")
    assert.is_true(err.verified ~= false)      -- it was signed: it is about another order
    assert.truthy(client:query { out_trade_no = o.out_trade_no }) -- the next answer is fine
  end)

  it("a query by transaction_id answered for another transaction is BAD_RESPONSE", function()
    local o = new_order()
    sb:fault { fault = "wrong_order", field = "id", match = o.transaction_id }
    local order, err = client:query { transaction_id = o.transaction_id }
    bad_response(order, err, "transaction")
    local ok = client:query { transaction_id = o.transaction_id }
    assert.equal(o.transaction_id, ok.id)
  end)

  it("only the id the call used is compared (positive control)", function()
    -- wrong_order with field=id on an out_trade_no lookup leaves out_trade_no
    -- as asked: the call named the order by out_trade_no, so it counts
    local o = new_order()
    sb:fault { fault = "wrong_order", field = "id", match = o.out_trade_no }
    local order = client:query { out_trade_no = o.out_trade_no }
    assert.equal(o.out_trade_no, order.out_trade_no)
  end)

  it("a query answer for another merchant (mchid) is BAD_RESPONSE", function()
    local o = new_order()
    sb:fault { fault = "wrong_merchant", match = o.out_trade_no }
    local order, err = client:query { out_trade_no = o.out_trade_no }
    bad_response(order, err, "mchid")
  end)

  it("a common-mode answer carrying an institution's sp_mchid is BAD_RESPONSE", function()
    local o = new_order()
    sb:fault { fault = "wrong_merchant", field = "sp_mchid", match = o.out_trade_no }
    local order, err = client:query { out_trade_no = o.out_trade_no }
    bad_response(order, err, "sp_mchid")
  end)

  it("institutional mode: another sub_mchid or sp_mchid is BAD_RESPONSE", function()
    local c = sb.cfg
    for _, field in ipairs { "sub_mchid", "sp_mchid" } do
      local o = new_order { sp_mchid = c.sp_mchid, sub_mchid = c.sub_mchid }
      sb:fault { fault = "wrong_merchant", field = field, match = o.out_trade_no }
      local order, err = inst:query { out_trade_no = o.out_trade_no }
      bad_response(order, err, field)
      local good = assert(inst:query { out_trade_no = o.out_trade_no })
      assert.equal(c.sub_mchid, good.sub_mchid)
    end
  end)

  it("institutional mode: an answer for another sub-merchant than the call's is BAD_RESPONSE", function()
    local c = sb.cfg
    local o = new_order { sp_mchid = c.sp_mchid, sub_mchid = c.sub_mchid }
    sb:fault { fault = "wrong_merchant", field = "sub_mchid", match = o.out_trade_no }
    local order, err = inst:query { out_trade_no = o.out_trade_no, sub_mchid = c.sub_mchid }
    bad_response(order, err, "sub_mchid")
  end)

  it("a query answer without trade_state is BAD_RESPONSE", function()
    local o = new_order()
    sb:fault { fault = "no_trade_state", match = o.out_trade_no }
    local order, err = client:query { out_trade_no = o.out_trade_no }
    bad_response(order, err, "trade_state")
  end)

  it("an answer naming no order, or the order in no field the call used, is BAD_RESPONSE", function()
    local Orders = require "wxpay.orders"
    local common = { mode = "common", mchid = "1900000109" }
    local function check(kind, id, order) return Orders._binding_error(common, kind, id, nil, order) end
    assert.matches("names no order", check("out-trade-no", "A1", { trade_state = "SUCCESS" }))
    assert.matches("names no order", check("id", "42", { out_trade_no = "A1", trade_state = "SUCCESS" }))
    assert.matches("transaction", check("id", "42", { id = "42", transaction_id = "43", trade_state = "SUCCESS" }))
    assert.matches("trade_state", check("id", "42", { transaction_id = "42", trade_state = 7 }))
    assert.is_nil(check("id", "42", { transaction_id = "42", trade_state = "SUCCESS", mchid = "1900000109" }))
    assert.is_nil(check("out-trade-no", "A1", { out_trade_no = "A1", trade_state = "CLOSED" }))
    assert.matches("mchid", check("out-trade-no", "A1", { out_trade_no = "A1", trade_state = "CLOSED",
      mchid = 1900000109 }))
  end)

  it("cancel does not take another order's answer as the confirmation", function()
    local o = new_order()
    sb:fault { fault = "wrong_order", field = "out_trade_no", match = o.out_trade_no, method = "GET" }
    local state, info = client:cancel { out_trade_no = o.out_trade_no, deadline_ms = 5000 }
    -- the revoke itself was a verified 204; the confirmation was about another order
    assert.equal("REVOKED", state)
    assert.is_false(info.confirmed)
    assert.equal(errors.BAD_RESPONSE, info.query_error and info.query_error.code)
  end)

  it("cancel after a failed revoke does not confirm CLOSED from another order's answer", function()
    -- the order really is CLOSED, but every query answer names another out_trade_no
    local o = new_order { trade_state = "CLOSED" }
    sb:fault { fault = "status", status = 500, code = "SYSTEM_ERROR", match = o.out_trade_no,
      method = "POST", count = 100 }
    sb:fault { fault = "wrong_order", field = "out_trade_no", match = o.out_trade_no, method = "GET",
      count = 100 }
    local state, err = client:cancel { out_trade_no = o.out_trade_no, deadline_ms = 1500 }
    assert.is_nil(state)
    assert.equal(errors.SYSTEM_ERROR, err.code)
  end)
end)

describe("replayed answers", function()
  local Verify = require "wxpay.verify"
  setup(function()
    sb = H.sandbox("answers")
    client = sb:client()
  end)
  teardown(function() client:close() sb:stop() end)
  before_each(function() sb:control("DELETE", "/faults") end)

  it("a replayed signed 204 does not count twice", function()
    local a = new_order()
    assert.is_true((client:revoke { out_trade_no = a.out_trade_no }))
    local b = new_order()
    -- the sandbox keeps answers per path: revoke b once honestly, then replay it
    assert.is_true((client:revoke { out_trade_no = b.out_trade_no }))
    sb:fault { fault = "replay", match = b.out_trade_no, method = "POST" }
    local ok, err = client:revoke { out_trade_no = b.out_trade_no }
    assert.is_nil(ok)
    assert.equal(errors.BAD_SIGNATURE, err.code)
    assert.matches("replayed answer", err.message)
    assert.is_false(err.verified)
  end)

  it("a replayed query answer is refused, for every client in the process", function()
    local o = new_order()
    assert.truthy(client:query { out_trade_no = o.out_trade_no })
    local other = sb:client()
    sb:fault { fault = "replay", match = o.out_trade_no, method = "GET" }
    local order, err = other:query { out_trade_no = o.out_trade_no }
    other:close()
    assert.is_nil(order)
    assert.equal(errors.BAD_SIGNATURE, err.code)
    assert.matches("replayed answer", err.message)
    assert.truthy(client:query { out_trade_no = o.out_trade_no }) -- fresh answers still count
  end)

  it("a replayed certificate download is refused", function()
    local dl = sb:client { platform_certs = false, apiv3_key = sb.cfg.apiv3_key }
    assert.truthy(dl:certificates())
    dl:close()
    local again = sb:client { platform_certs = false, apiv3_key = sb.cfg.apiv3_key }
    sb:fault { fault = "replay", match = "/v3/global/certificates" }
    local list, err = again:certificates()
    again:close()
    assert.is_nil(list)
    assert.equal(errors.BAD_SIGNATURE, err.code)
    assert.matches("replayed answer", err.message)
  end)

  describe("the nonce memory", function()
    it("forgets nonces once their timestamp is out of the window", function()
      local m = Verify._new_nonce_memory(10)
      assert.is_true((m:admit("S", "n1", 1000, 1000)))
      local ok, why = m:admit("S", "n1", 1000, 1100)
      assert.is_false(ok)
      assert.equal("replayed answer", why)
      assert.is_true((m:admit("S2", "n1", 1000, 1100)))    -- another signer's nonce
      -- 1000 + 300 < 1301: the old entries are pruned (and the clock check refuses them)
      assert.is_true((m:admit("S", "n2", 1301, 1301)))
      assert.equal(1, m:count())
    end)

    it("at its cap refuses what it can no longer rule out, never a silent replay", function()
      local m = Verify._new_nonce_memory(3)
      for i = 1, 3 do assert.is_true((m:admit("S", "n" .. i, 1000 + i, 1003))) end
      -- full: the oldest second (1001) is dropped and becomes the floor
      assert.is_true((m:admit("S", "n4", 1004, 1004)))
      local ok, why = m:admit("S", "n1", 1001, 1004)      -- a replay of a forgotten nonce
      assert.is_false(ok)
      assert.matches("nonce memory", why)
      ok = m:admit("S", "fresh", 1001, 1004)               -- even a fresh one that old
      assert.is_false(ok)
      assert.is_false((m:admit("S", "n4", 1004, 1004)))    -- remembered ones stay refused
      assert.is_true((m:admit("S", "n5", 1005, 1005)))
      assert.is_true(m:count() <= 3)
    end)
  end)
end)

describe("success metadata", function()
  setup(function()
    sb = H.sandbox("answers")
    client = sb:client()
  end)
  teardown(function() client:close() sb:stop() end)

  local function check_meta(meta, status)
    assert.is_table(meta)
    assert.equal(status, meta.status)
    assert.is_string(meta.request_id)
    assert.truthy(#meta.request_id > 0)
    assert.is_number(meta.ms)
    assert.truthy(meta.ms >= 0)
    assert.equal(sb.cfg.base_url:gsub("/$", ""), meta.base_url)
    local log = sb:requests()
    local found = false
    for _, r in ipairs(log) do if r.request_id == meta.request_id then found = true end end
    assert.is_true(found, "the request id is the sandbox's")
  end

  it("revoke returns true, meta", function()
    local o = new_order()
    local ok, meta = client:revoke { out_trade_no = o.out_trade_no }
    assert.is_true(ok)
    check_meta(meta, 204)
  end)

  it("query returns order, meta", function()
    local o = new_order()
    local order, meta = client:query { out_trade_no = o.out_trade_no }
    assert.equal("SUCCESS", order.trade_state)
    check_meta(meta, 200)
    assert.is_nil(order.request_id)      -- the order table stays WeChat's JSON
  end)

  it("request returns the answer, meta", function()
    local o = new_order()
    local res, meta = client:request { method = "GET",
      path = "/v3/global/transactions/out-trade-no/" .. o.out_trade_no, query = { mchid = sb.cfg.mchid } }
    assert.equal(200, res.status)
    check_meta(meta, 200)
  end)

  it("cancel's info carries the meta of the answer that decided it", function()
    local o = new_order()
    local state, info = client:cancel { out_trade_no = o.out_trade_no }
    assert.equal("REVOKED", state)
    check_meta(info.meta, 200)
    check_meta(info.revoke_meta, 204)
  end)
end)
