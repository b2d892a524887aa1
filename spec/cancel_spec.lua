-- cancel: drive an uncertain quick-pay order to a final state; backup hosts.
local core = require "wxpay.core"
local H = require "helpers"

local sb

local function order(state, extra)
  local f = { out_trade_no = H.order_no("Q"), trade_state = state }
  for k, v in pairs(extra or {}) do f[k] = v end
  return sb:order(f)
end

local function revokes_sent(no)
  local n = 0
  for _, r in ipairs(sb:requests()) do
    if r.method == "POST" and r.target:find(no, 1, true) then n = n + 1 end
  end
  return n
end

describe("cancel", function()
  setup(function() sb = H.sandbox("cancel") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  it("paid -> REVOKED, unpaid -> CLOSED, already revoked -> REVOKED", function()
    local c = sb:client()
    local p, u = order("SUCCESS"), order("NOTPAY")
    local state, info = c:cancel { out_trade_no = p.out_trade_no }
    assert.equal("REVOKED", state)
    assert.is_true(info.confirmed)
    assert.equal(1, info.attempts)
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
    assert.equal("CLOSED", (c:cancel { out_trade_no = u.out_trade_no }))
    assert.equal("CLOSED", sb:get_order(u.out_trade_no).trade_state)
    assert.equal("REVOKED", (c:cancel { transaction_id = p.transaction_id }))
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("SYSTEM_ERROR after applying -> REVOKED, found by the query, one effective revoke", function()
    local c = sb:client()
    local p = order("SUCCESS")
    sb:fault { fault = "apply_then_status", status = 500, code = "SYSTEM_ERROR", match = "/reverse" }
    local state, info = c:cancel { out_trade_no = p.out_trade_no }
    assert.equal("REVOKED", state)
    assert.is_true(info.confirmed)
    assert.equal(1, info.attempts)
    assert.equal(1, revokes_sent(p.out_trade_no))
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("USERPAYING twice, then success -> REVOKED", function()
    local c = sb:client()
    local p = order("USERPAYING")
    sb:fault { fault = "status", status = 400, code = "USERPAYING", message = "paying", count = 2, match = "/reverse" }
    local state, info = c:cancel { out_trade_no = p.out_trade_no, deadline_ms = 20000 }
    assert.equal("CLOSED", state) -- the user never finished paying
    assert.equal(3, info.attempts)
    assert.equal(3, revokes_sent(p.out_trade_no))
    local p2 = order("SUCCESS")
    sb:fault { fault = "status", status = 400, code = "USERPAYING", message = "paying", count = 2, match = "/reverse" }
    assert.equal("REVOKED", (c:cancel { out_trade_no = p2.out_trade_no, deadline_ms = 20000 }))
  end)

  it("a dropped connection after applying is confirmed by query, no double revoke", function()
    local c = sb:client()
    local p = order("SUCCESS")
    sb:fault { fault = "drop_after_apply", match = "/reverse" }
    local state, info = c:cancel { out_trade_no = p.out_trade_no }
    assert.equal("REVOKED", state)
    assert.equal(1, info.attempts)
    assert.equal(1, revokes_sent(p.out_trade_no))
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("a forged revoke answer is checked by query, a forged query is not believed", function()
    local c = sb:client()
    local p = order("SUCCESS")
    -- the revoke's answer is forged (the revoke did happen); so is the next query's
    sb:fault { fault = "flip_signature", match = "/reverse" }
    sb:fault { fault = "flip_signature", match = "/transactions/out-trade-no/" .. p.out_trade_no .. "?" }
    local state, info = c:cancel { out_trade_no = p.out_trade_no, deadline_ms = 10000 }
    assert.equal("REVOKED", state)
    assert.is_true(info.confirmed)
    assert.equal(2, info.attempts)
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("persistent SYSTEM_ERROR with a short deadline fails within the deadline", function()
    local c = sb:client()
    local p = order("SUCCESS")
    sb:fault { fault = "status", status = 500, code = "SYSTEM_ERROR", count = 1000, match = "/reverse" }
    local t0 = core.monotonic_ms()
    local state, err = c:cancel { out_trade_no = p.out_trade_no, deadline_ms = 2500 }
    local took = core.monotonic_ms() - t0
    assert.is_nil(state)
    assert.equal("SYSTEM_ERROR", err.code)
    assert.is_true(err.attempts >= 2, "attempts " .. err.attempts)
    assert.is_true(took < 2500 + 1000, "took " .. took)
    assert.equal(err.attempts, revokes_sent(p.out_trade_no))
    assert.equal("SUCCESS", sb:get_order(p.out_trade_no).trade_state)
  end)

  it("non-retryable codes return at once with advice", function()
    local c = sb:client()
    local state, err = c:cancel { out_trade_no = "NEVER-MADE-Q" }
    assert.is_nil(state)
    assert.equal("ORDER_NOT_EXIST", err.code)
    assert.equal(1, err.attempts)
    local r = order("REFUND")
    state, err = c:cancel { out_trade_no = r.out_trade_no }
    assert.is_nil(state)
    assert.equal("TRADE_ERROR", err.code)
    assert.matches("risk control", tostring(err))
  end)

  it("paid_at more than 7 days ago -> REVERSE_EXPIRE at once, nothing sent", function()
    local c = sb:client()
    local before = sb:stats().requests
    local state, err = c:cancel { out_trade_no = "OLD1", paid_at = os.time() - 8 * 86400 }
    assert.is_nil(state)
    assert.equal("REVERSE_EXPIRE", err.code)
    assert.equal(0, err.attempts)
    assert.matches("refund", err.message)
    assert.equal(before, sb:stats().requests)
  end)

  it("paid_at in the future (e.g. milliseconds) is INVALID_ARGUMENT, nothing sent", function()
    local c = sb:client()
    local before = sb:stats().requests
    local state, err = c:cancel { out_trade_no = "FUT1", paid_at = os.time() * 1000 }
    assert.is_nil(state)
    assert.equal("INVALID_ARGUMENT", err.code)
    assert.equal(0, err.attempts)
    assert.equal(before, sb:stats().requests)
  end)

  it("a deadline too short for the 15 s rule sends nothing", function()
    local c = sb:client()
    local before = sb:stats().requests
    local state, err = c:cancel { out_trade_no = "NEW1", paid_at = os.time(), deadline_ms = 1000 }
    assert.is_nil(state)
    assert.equal("TIMEOUT", err.code)
    assert.equal(before, sb:stats().requests)
  end)

  it("logs each attempt, wait and retry without key material #logger", function()
    local lines = {}
    local c = sb:client { logger = function(level, msg, fields)
      local parts = {}
      for k, v in pairs(fields) do parts[#parts + 1] = k .. "=" .. tostring(v) end
      lines[#lines + 1] = level .. " " .. msg .. " " .. table.concat(parts, " ")
    end }
    local p = order("SUCCESS")
    sb:fault { fault = "status", status = 503, code = "SERVICE_UNAVAILABLE", match = "/reverse" }
    assert.equal("REVOKED", (c:cancel { out_trade_no = p.out_trade_no }))
    local text = table.concat(lines, "\n")
    assert.matches("revoke attempt", text)
    assert.matches("retrying revoke", text)
    assert.matches("SERVICE_UNAVAILABLE", text)
    for _, frag in ipairs(H.key_fragments(sb.cfg.private_key)) do
      assert.is_nil(text:find(frag, 1, true))
    end
  end)

  it("waits until paid_at + 15 s before the revoke #slow", function()
    local c = sb:client()
    local p = order("SUCCESS")
    local paid_at = math.floor(core.time()) - 2
    local state = c:cancel { out_trade_no = p.out_trade_no, paid_at = paid_at, deadline_ms = 30000 }
    assert.equal("REVOKED", state)
    local first
    for _, r in ipairs(sb:requests()) do
      if r.method == "POST" and r.target:find(p.out_trade_no, 1, true) then first = first or r.time end
    end
    assert.is_number(first)
    assert.is_true(first >= paid_at + 15, ("revoke at paid_at + %.2f s"):format(first - paid_at))
  end)
end)

describe("backup hosts", function()
  setup(function() sb = H.sandbox("cancel") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  it("a primary host refusing connections -> the backup is used, once", function()
    local switches = 0
    local c = sb:client { base_url = "https://localhost:1", backup_urls = { sb.cfg.base_url },
      logger = function(_, msg) if msg == "switching host" then switches = switches + 1 end end }
    local p = order("SUCCESS")
    assert.equal("REVOKED", (c:cancel { out_trade_no = p.out_trade_no }))
    assert.is_true(c:revoke { out_trade_no = p.out_trade_no })
    assert(c:query { out_trade_no = p.out_trade_no })
    assert.equal(1, switches) -- the host that worked stays preferred
    assert.equal(1, sb:get_order(p.out_trade_no).refunds)
  end)

  it("does not resend a plain revoke after the request may have arrived", function()
    local c = sb:client { backup_urls = { sb.cfg.base_url }, timeout_ms = 1000 }
    local p = order("SUCCESS")
    sb:fault { fault = "drop_after_apply", match = "/reverse" }
    local ok, err = c:revoke { out_trade_no = p.out_trade_no }
    assert.is_nil(ok)
    assert.equal("NETWORK_ERROR", err.code)
    assert.is_true(err.retryable)
    assert.equal(1, revokes_sent(p.out_trade_no))
  end)

  it("all hosts down -> NETWORK_ERROR", function()
    local c = sb:client { base_url = "https://localhost:1", backup_urls = { "https://127.0.0.1:2" } }
    local ok, err = c:revoke { out_trade_no = "DOWN1" }
    assert.is_nil(ok)
    assert.equal("NETWORK_ERROR", err.code)
  end)
end)
