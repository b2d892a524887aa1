-- Fault matrix: every sandbox fault x revoke, query, cancel (short deadline).
-- Each case: the documented error code (api.md), never `true` or a final state
-- on an answer that was not verified, and the same client works right after.
local wxpay = require "wxpay"
local H = require "helpers"

local errors = wxpay.errors
local sb, client

local TIMEOUT_MS = 1000      -- the client's whole-request limit in this file
local DEADLINE_MS = 700      -- cancel's deadline in this file
local PERSIST = 1000         -- a fault count that outlives any one call

-- api.md: retryable for SYSTEM_ERROR, USERPAYING, RATELIMIT_EXCEEDED,
-- SERVICE_UNAVAILABLE, any 5xx, NETWORK_ERROR and TIMEOUT.
local RETRYABLE = { SYSTEM_ERROR = true, USERPAYING = true, RATELIMIT_EXCEEDED = true,
  SERVICE_UNAVAILABLE = true, NETWORK_ERROR = true, TIMEOUT = true }

-- fault spec, and the code each call must fail with (true: the call succeeds,
-- the fault does not spoil the answer).  `unverified` marks answers that must
-- be reported with err.verified == false.
local MATRIX = {
  { name = "delay past timeout_ms", fault = { fault = "delay", ms = 2500 },
    revoke = "TIMEOUT", query = "TIMEOUT", cancel = "TIMEOUT" },
  { name = "status 500 SYSTEM_ERROR", fault = { fault = "status", status = 500, code = "SYSTEM_ERROR" },
    revoke = "SYSTEM_ERROR", query = "SYSTEM_ERROR", cancel = "SYSTEM_ERROR", status = 500 },
  { name = "status 429 RATELIMIT_EXCEEDED",
    fault = { fault = "status", status = 429, code = "RATELIMIT_EXCEEDED" },
    revoke = "RATELIMIT_EXCEEDED", query = "RATELIMIT_EXCEEDED", cancel = "RATELIMIT_EXCEEDED", status = 429 },
  { name = "status 503 SERVICE_UNAVAILABLE",
    fault = { fault = "status", status = 503, code = "SERVICE_UNAVAILABLE" },
    revoke = "SERVICE_UNAVAILABLE", query = "SERVICE_UNAVAILABLE", cancel = "SERVICE_UNAVAILABLE", status = 503 },
  { name = "status 202 USERPAYING (a signed 2xx with an error code)",
    fault = { fault = "status", status = 202, code = "USERPAYING" },
    revoke = "USERPAYING", query = "USERPAYING", cancel = "USERPAYING", status = 202 },
  { name = "drop", fault = { fault = "drop" },
    revoke = "NETWORK_ERROR", query = "NETWORK_ERROR", cancel = "NETWORK_ERROR" },
  { name = "drop_after_apply", fault = { fault = "drop_after_apply" },
    revoke = "NETWORK_ERROR", query = "NETWORK_ERROR", cancel = "NETWORK_ERROR" },
  { name = "truncate", fault = { fault = "truncate" },
    revoke = "BAD_RESPONSE", query = "BAD_RESPONSE", cancel = "BAD_RESPONSE" },
  { name = "flip_signature", fault = { fault = "flip_signature" }, unverified = true,
    revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "unknown_serial", fault = { fault = "unknown_serial" }, unverified = true,
    revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "stale_timestamp (600 s old)", fault = { fault = "stale_timestamp" }, unverified = true,
    revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "stale_timestamp (400 s ahead)", fault = { fault = "stale_timestamp", seconds = -400 },
    unverified = true, revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "missing_signature", fault = { fault = "missing_signature" }, unverified = true,
    revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "bad_base64_signature", fault = { fault = "bad_base64_signature" }, unverified = true,
    revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "connection_close", fault = { fault = "connection_close" },
    revoke = true, query = true, cancel = true },
  { name = "oversized (2 MiB)", fault = { fault = "oversized" },
    revoke = "BAD_RESPONSE", query = "BAD_RESPONSE", cancel = "BAD_RESPONSE" },
  { name = "non_json", fault = { fault = "non_json" },
    revoke = "BAD_RESPONSE", query = "BAD_RESPONSE", cancel = "BAD_RESPONSE" },
  { name = "unsigned_error (500)", fault = { fault = "unsigned_error" }, unverified = true,
    revoke = "SYSTEM_ERROR", query = "SYSTEM_ERROR", cancel = "SYSTEM_ERROR", status = 500 },
  { name = "unsigned_error (404 ORDER_NOT_EXIST)",
    fault = { fault = "unsigned_error", status = 404, code = "ORDER_NOT_EXIST" }, unverified = true,
    revoke = "ORDER_NOT_EXIST", query = "ORDER_NOT_EXIST", cancel = "ORDER_NOT_EXIST", status = 404 },
  { name = "unsigned 2xx (forged success)", fault = { fault = "unsigned_error", status = 200 },
    unverified = true, revoke = "BAD_SIGNATURE", query = "BAD_SIGNATURE", cancel = "BAD_SIGNATURE" },
  { name = "apply_then_status 500", fault = { fault = "apply_then_status" },
    revoke = "SYSTEM_ERROR", query = "SYSTEM_ERROR", cancel = "SYSTEM_ERROR", status = 500 },
  { name = "an unknown WeChat code is passed through",
    fault = { fault = "status", status = 400, code = "BRAND_NEW_CODE" },
    revoke = "BRAND_NEW_CODE", query = "BRAND_NEW_CODE", cancel = "BRAND_NEW_CODE", status = 400 },
}

local function new_order(state)
  return sb:order { out_trade_no = H.order_no("F"), trade_state = state or "SUCCESS" }
end

local function call(c, what, o)
  if what == "cancel" then return c:cancel { out_trade_no = o.out_trade_no, deadline_ms = DEADLINE_MS } end
  return c[what](c, { out_trade_no = o.out_trade_no })
end

-- The failure must be a well-formed error object carrying `code`.
local function check_error(res, err, what, code, row)
  assert.is_nil(res, what .. " returned a result on a spoiled answer")
  assert.is_true(errors.is(err), "not a wxpay error object")
  -- cancel keeps retrying a retryable failure until deadline_ms: on a slow
  -- machine (valgrind) the deadline may end the last attempt itself
  if what == "cancel" and err.code == "TIMEOUT" and RETRYABLE[code] then code = "TIMEOUT" end
  assert.equal(code, err.code, tostring(err))
  assert.is_string(err.message)
  assert.is_string(tostring(err))
  assert.truthy(tostring(err):find(code, 1, true))
  assert.truthy(("x" .. err):find(code, 1, true))   -- __concat
  assert.is_boolean(err.retryable)
  local want_retry = RETRYABLE[code] == true or (row.status or 0) >= 500
  assert.equal(want_retry, err.retryable, code .. " retryable")
  if row.status then assert.equal(row.status, err.status) end
  if row.unverified then assert.is_false(err.verified) end
  if what == "cancel" then
    assert.is_number(err.attempts)
    assert.is_true(err.attempts >= 1)
  end
end

-- A normal revoke right after, on the same client, must succeed (faults
-- match only the order they were set for; `normal` is a paid order seeded
-- once, and revoking it again is answered 204 again).
local normal
local function still_works(c)
  local ok, err = c:revoke { out_trade_no = normal.out_trade_no }
  assert.is_true(ok, err and tostring(err))
end

describe("fault matrix", function()
  setup(function()
    sb = H.sandbox("faults")
    client = sb:client { timeout_ms = TIMEOUT_MS }
    normal = new_order()
  end)
  teardown(function()
    if client then client:close() end
    sb:stop()
  end)

  for _, row in ipairs(MATRIX) do
    for _, what in ipairs { "revoke", "query", "cancel" } do
      local want = row[what]
      it(("%s x %s -> %s"):format(row.name, what, want == true and "success" or want), function()
        local o = new_order()
        local f = {}
        for k, v in pairs(row.fault) do f[k] = v end
        f.match, f.count = o.out_trade_no, PERSIST
        sb:fault(f)
        local t0 = os.time()
        local res, err = call(client, what, o)
        assert.is_true(os.time() - t0 <= 10, "the call overran its limits")
        if want == true then
          assert.truthy(res, err and tostring(err))
          if what == "revoke" then assert.is_true(res) end
          if what == "query" then assert.equal(o.out_trade_no, res.out_trade_no) end
          if what == "cancel" then assert.equal("REVOKED", res) end
        else
          check_error(res, err, what, want, row)
        end
        still_works(client)
      end)
    end
  end

  describe("cancel learns the real state when an answer was lost", function()
    it("drop_after_apply on the revoke only -> REVOKED, confirmed by the query", function()
      local o = new_order()
      sb:fault { fault = "drop_after_apply", match = o.out_trade_no, method = "POST", count = PERSIST }
      local state, info = client:cancel { out_trade_no = o.out_trade_no, deadline_ms = 3000 }
      assert.equal("REVOKED", state)
      assert.is_true(info.confirmed)
      assert.equal(1, sb:get_order(o.out_trade_no).refunds)
      still_works(client)
    end)

    it("a forged revoke answer never counts, the query decides (unpaid -> CLOSED)", function()
      local o = new_order("NOTPAY")
      sb:fault { fault = "flip_signature", match = o.out_trade_no, method = "POST", count = 1 }
      local state, info = client:cancel { out_trade_no = o.out_trade_no, deadline_ms = 3000 }
      assert.equal("CLOSED", state)
      assert.is_true(info.confirmed)
      still_works(client)
    end)
  end)

  describe("hostile text in an error answer", function()
    local NASTY = "line1\r\nX-Injected: yes\n\27[31mred\0nul\tend"
    for _, f in ipairs { "status", "unsigned_error" } do
      it(f .. ": tostring(err) and .. stay one line without control bytes", function()
        local o = new_order()
        sb:fault { fault = f, status = 400, code = "PARAM_ERROR", message = NASTY, match = o.out_trade_no, count = 3 }
        for _, what in ipairs { "revoke", "query" } do
          local res, err = call(client, what, o)
          assert.is_nil(res)
          assert.equal("PARAM_ERROR", err.code)
          assert.is_nil(tostring(err):find("%c"), tostring(err))
          assert.is_nil(("" .. err):find("%c"))
        end
        still_works(client)
      end)
    end
  end)

  describe("a single dropped answer on a reused connection", function()
    it("is either a NETWORK_ERROR or the verified answer to libcurl's one resend", function()
      local warm = new_order()
      assert.is_true(client:revoke { out_trade_no = warm.out_trade_no }) -- a live keep-alive connection
      local o = new_order()
      sb:fault { fault = "drop", match = o.out_trade_no, count = 1 }
      local ok, err = client:revoke { out_trade_no = o.out_trade_no }
      if ok then
        assert.is_true(ok)
        assert.equal("REVOKED", sb:get_order(o.out_trade_no).trade_state)
      else
        assert.equal(errors.NETWORK_ERROR, err.code)
      end
      still_works(client)
    end)
  end)

  describe("TLS: a server certificate the client does not trust", function()
    local tmp
    setup(function()
      tmp = os.tmpname()
      os.remove(tmp)
      assert(os.execute("mkdir -p " .. tmp))
      local _, ok = H.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=not-the-sandbox-ca "
        .. "-keyout %s/ca_key.pem -out %s/ca.pem 2>&1"):format(tmp, tmp))
      assert(ok, "openssl could not make a CA")
    end)
    teardown(function() H.sh("rm -rf " .. tmp) end)

    local cases = {
      { "the merchant certificate as ca_file", function() return sb.cfg.merchant_cert end },
      { "a fresh self-signed CA as ca_file", function() return tmp .. "/ca.pem" end },
      { "the platform certificate as ca_file", function() return sb.cfg.platform_cert end },
    }
    for _, case in ipairs(cases) do
      for _, what in ipairs { "revoke", "query", "cancel" } do
        it(case[1] .. " x " .. what .. " -> TLS_ERROR, nothing reaches the API", function()
          local bad = sb:client { ca_file = case[2](), timeout_ms = TIMEOUT_MS }
          local o = new_order()
          local before = sb:stats()
          local res, err = call(bad, what, o)
          check_error(res, err, what, "TLS_ERROR", {})
          local after = sb:stats()
          assert.equal(before.requests, after.requests)
          assert.equal(before.handshakes, after.handshakes)
          assert.equal("SUCCESS", sb:get_order(o.out_trade_no).trade_state)
          if what == "cancel" then assert.equal(1, err.attempts) end  -- TLS_ERROR is final
          bad:close()
          still_works(client)
        end)
      end
    end
  end)

  describe("connection refused", function()
    for _, what in ipairs { "revoke", "query", "cancel" } do
      it(what .. " -> NETWORK_ERROR", function()
        local dead = sb:client { base_url = "https://127.0.0.1:1", timeout_ms = TIMEOUT_MS }
        local o = new_order()
        local res, err = call(dead, what, o)
        check_error(res, err, what, "NETWORK_ERROR", {})
        assert.equal("SUCCESS", sb:get_order(o.out_trade_no).trade_state)
        dead:close()
        still_works(client)
      end)
    end
  end)
end)
