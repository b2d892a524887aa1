-- The core client against the sandbox: revoke, query, request, both modes,
-- every seed error code, forged answers, keep-alive, argument checks.
local wxpay = require "wxpay"
local H = require "helpers"

local sb

local function new_order(state, extra)
  local no = H.order_no("C")
  local f = { out_trade_no = no, trade_state = state }
  for k, v in pairs(extra or {}) do f[k] = v end
  return sb:order(f)
end

describe("client", function()
  setup(function() sb = H.sandbox("client") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  describe("wxpay.new", function()
    it("prints usefully and never shows key material", function()
      local c = sb:client()
      local s = tostring(c)
      assert.equal(("wxpay.Client{mode=common, mchid=%s, base_url=%s}"):format(sb.cfg.mchid, sb.cfg.base_url), s)
      for _, frag in ipairs(H.key_fragments(sb.cfg.private_key)) do
        assert.is_nil(s:find(frag, 1, true))
      end
      for k, v in pairs(c) do
        assert.is_nil(tostring(v):find("PRIVATE KEY", 1, true), k)
      end
      c:close()
    end)

    it("needs a way to verify answers", function()
      local c, err = wxpay.new(sb:options { platform_certs = false })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("verify", err.message)
    end)

    it("takes the key as PEM text or path, PKCS#8 or PKCS#1", function()
      local pem = H.read(sb.cfg.private_key)
      for _, k in ipairs { sb.cfg.private_key, pem, sb.cfg.private_key_pkcs1 } do
        local c = sb:client { private_key = k }
        local o = new_order("SUCCESS")
        assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
        c:close()
      end
    end)

    it("reports unusable options as CONFIG_ERROR and raises only for a non-table", function()
      local cases = {
        { private_key = "/nonexistent/key.pem" },
        { private_key = sb.cfg.platform_cert },
        { platform_certs = { sb.cfg.private_key } },
        { base_url = "http://localhost:1" },
        { timeout_ms = -5 },
        { mchid = 1900000109.5 },   -- a whole number is accepted (spec/newcomer_spec.lua)
        { no_such_option = true },
        { apiv3_key = "short" },
        { serial_no = "not hex!" },
        { transport = "carrier pigeon" },
      }
      for i, over in ipairs(cases) do
        local c, err = wxpay.new(sb:options(over))
        assert.is_nil(c, i)
        assert.equal("CONFIG_ERROR", err.code, i)
      end
      assert.has_error(function() wxpay.new(42) end)
      assert.has_error(function() wxpay.new() end)
    end)
  end)

  describe("revoke", function()
    for _, mode in ipairs { "common", "institutional" } do
      for _, idkind in ipairs { "out_trade_no", "transaction_id" } do
        it(("revokes a paid order in %s mode by %s"):format(mode, idkind), function()
          local c = sb:client({}, mode)
          local extra = mode == "institutional" and { sp_mchid = sb.cfg.sp_mchid, sub_mchid = sb.cfg.sub_mchid } or nil
          local o = new_order("SUCCESS", extra)
          assert.is_true(c:revoke { [idkind] = o[idkind] })
          local after = sb:get_order(o.out_trade_no)
          assert.equal("REVOKED", after.trade_state)
          assert.equal(1, after.refunds)
          -- revoking a final order answers 204 again, no second refund
          assert.is_true(c:revoke { [idkind] = o[idkind] })
          assert.equal(1, sb:get_order(o.out_trade_no).refunds)
          c:close()
        end)
      end
    end

    it("closes an unpaid order", function()
      local c = sb:client()
      local o = new_order("NOTPAY")
      assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
      assert.equal("CLOSED", sb:get_order(o.out_trade_no).trade_state)
      assert.equal(0, sb:get_order(o.out_trade_no).refunds)
    end)

    it("sends exactly the documented request", function()
      local c = sb:client({ user_agent = "pos-7/1.2" }, "institutional")
      local o = new_order("SUCCESS", { sp_mchid = sb.cfg.sp_mchid, sub_mchid = "1900000222" })
      assert.is_true(c:revoke { out_trade_no = o.out_trade_no, sub_mchid = "1900000222" })
      local reqs = sb:requests()
      local r = reqs[#reqs]
      assert.equal("POST", r.method)
      assert.equal("/v3/global/micropay/transactions/out-trade-no/" .. o.out_trade_no .. "/reverse", r.target)
      assert.equal('{"sp_mchid":"1900000100","sub_mchid":"1900000222"}', r.body)
      local h = {}
      for k, v in pairs(r.headers) do h[k:lower()] = v end
      assert.matches("^wxpay/%S+ %(.*libcurl/", h["user-agent"])
      assert.matches("pos%-7/1%.2$", h["user-agent"])
      assert.equal("application/json", h["accept"])
      assert.equal("application/json", h["content-type"])
      assert.matches('mchid="1900000100"', h["authorization"])
    end)

    it("percent-encodes the path segment (every byte outside RFC 3986 unreserved, issue 13)", function()
      local c = sb:client()
      local o = new_order("SUCCESS", { out_trade_no = "A|b*c@d-e_f" })
      assert.is_true(c:revoke { out_trade_no = "A|b*c@d-e_f" })
      local reqs = sb:requests()
      assert.equal("/v3/global/micropay/transactions/out-trade-no/A%7Cb%2Ac%40d-e_f/reverse", reqs[#reqs].target)
      assert.equal("REVOKED", sb:get_order(o.out_trade_no).trade_state)
    end)
  end)

  describe("seed error codes end to end", function()
    local c
    before_each(function() c = sb:client() end)
    after_each(function() c:close() end)

    local function expect(code, status, ok, err)
      assert.is_nil(ok)
      assert.equal(code, err.code)
      assert.equal(status, err.status)
      assert.is_string(err.request_id)
      assert.is_true(err.verified)
      assert.equal(code == "SYSTEM_ERROR", err.retryable)
      assert.matches(code, tostring(err), 1, true)
      assert.matches(code, "error: " .. err, 1, true)
    end

    it("SYSTEM_ERROR", function()
      local o = new_order("SUCCESS")
      sb:fault { fault = "status", status = 500, code = "SYSTEM_ERROR", message = "busy" }
      expect("SYSTEM_ERROR", 500, c:revoke { out_trade_no = o.out_trade_no })
      assert.equal("SUCCESS", sb:get_order(o.out_trade_no).trade_state)
    end)

    it("INVALID_TRANSACTIONID", function()
      -- only the server can say an id is invalid for it: the fault stands in
      sb:fault { fault = "status", status = 400, code = "INVALID_TRANSACTIONID", message = "bad id" }
      expect("INVALID_TRANSACTIONID", 400, c:revoke { transaction_id = "4200000000000000000000000000" })
    end)

    it("PARAM_ERROR with its detail", function()
      sb:fault { fault = "status", status = 400, code = "PARAM_ERROR", message = "bad" }
      local ok, err = c:revoke { out_trade_no = "X1" }
      expect("PARAM_ERROR", 400, ok, err)
    end)

    it("REVERSE_EXPIRE for an order older than 7 days", function()
      local o = new_order("SUCCESS", { created_at = os.time() - 8 * 86400 })
      local ok, err = c:revoke { out_trade_no = o.out_trade_no }
      expect("REVERSE_EXPIRE", 400, ok, err)
      assert.matches("refund", wxpay.errors.info(err.code).action)
    end)

    it("INVALID_REQUEST", function()
      sb:fault { fault = "status", status = 400, code = "INVALID_REQUEST", message = "no" }
      expect("INVALID_REQUEST", 400, c:revoke { out_trade_no = "X2" })
    end)

    it("TRADE_ERROR for a refunded order", function()
      local o = new_order("REFUND")
      expect("TRADE_ERROR", 403, c:revoke { out_trade_no = o.out_trade_no })
    end)

    it("ORDER_NOT_EXIST, passed through", function()
      expect("ORDER_NOT_EXIST", 404, c:revoke { out_trade_no = "NEVER-MADE" })
    end)

    it("a code the library does not know is passed through unchanged", function()
      sb:fault { fault = "status", status = 403, code = "FREQUENCY_LIMITED", message = "slow down" }
      local ok, err = c:revoke { out_trade_no = "X3" }
      assert.is_nil(ok)
      assert.equal("FREQUENCY_LIMITED", err.code)
      assert.equal("slow down", err.message)
    end)

    it("USERPAYING and RATELIMIT_EXCEEDED are retryable", function()
      sb:fault { fault = "status", status = 429, code = "RATELIMIT_EXCEEDED", message = "slow" }
      local _, err = c:revoke { out_trade_no = "X4" }
      assert.equal("RATELIMIT_EXCEEDED", err.code)
      assert.is_true(err.retryable)
      sb:fault { fault = "status", status = 400, code = "USERPAYING", message = "paying" }
      _, err = c:revoke { out_trade_no = "X4" }
      assert.equal("USERPAYING", err.code)
      assert.is_true(err.retryable)
    end)
  end)

  describe("forged and broken answers are never success", function()
    local c
    before_each(function() c = sb:client { timeout_ms = 1500 } end)
    after_each(function() c:close() end)

    local cases = {
      { "flip_signature", "BAD_SIGNATURE" },
      { "missing_signature", "BAD_SIGNATURE" },
      { "stale_timestamp", "BAD_SIGNATURE" },
      { "unknown_serial", "BAD_SIGNATURE" },
      { "bad_base64_signature", "BAD_SIGNATURE" },
      { "truncate", "BAD_SIGNATURE|BAD_RESPONSE" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " -> " .. case[2], function()
        local o = new_order("SUCCESS")
        sb:fault { fault = case[1] }
        local ok, err = c:revoke { out_trade_no = o.out_trade_no }
        assert.is_nil(ok)
        assert.truthy(("|" .. case[2] .. "|"):find("|" .. err.code .. "|", 1, true), err.code)
        -- the client still works afterwards
        assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
      end)
    end

    it("an unsigned error still reports its code, marked unverified", function()
      sb:fault { fault = "unsigned_error", status = 500, code = "SYSTEM_ERROR" }
      local ok, err = c:revoke { out_trade_no = "X5" }
      assert.is_nil(ok)
      assert.equal("SYSTEM_ERROR", err.code)
      assert.is_false(err.verified)
      assert.matches("unverified", tostring(err))
    end)

    it("a forged query answer is not returned", function()
      local o = new_order("SUCCESS")
      sb:fault { fault = "flip_signature" }
      local order, err = c:query { out_trade_no = o.out_trade_no }
      assert.is_nil(order)
      assert.equal("BAD_SIGNATURE", err.code)
    end)

    it("a non-JSON query answer is BAD_RESPONSE, an oversized one too", function()
      local o = new_order("SUCCESS")
      sb:fault { fault = "non_json" }
      local order, err = c:query { out_trade_no = o.out_trade_no }
      assert.is_nil(order)
      assert.equal("BAD_RESPONSE", err.code)
      sb:fault { fault = "oversized" }
      order, err = c:query { out_trade_no = o.out_trade_no }
      assert.is_nil(order)
      assert.equal("BAD_RESPONSE", err.code)
      assert.matches("size", err.message)
    end)

    it("a delay past timeout_ms is TIMEOUT", function()
      local o = new_order("SUCCESS")
      sb:fault { fault = "delay", ms = 2500 }
      local ok, err = c:revoke { out_trade_no = o.out_trade_no }
      assert.is_nil(ok)
      assert.equal("TIMEOUT", err.code)
      assert.is_true(err.retryable)
    end)
  end)

  describe("query", function()
    it("returns the decoded order in both modes", function()
      local c = sb:client()
      local o = new_order("NOTPAY")
      local got = assert(c:query { out_trade_no = o.out_trade_no })
      assert.equal("NOTPAY", got.trade_state)
      assert.equal(o.transaction_id, got.id)
      assert.equal("MICROPAY", got.trade_type)
      local byid = assert(c:query { transaction_id = o.transaction_id })
      assert.equal(o.out_trade_no, byid.out_trade_no)
      local ci = sb:client({}, "institutional")
      local oi = new_order("SUCCESS", { sp_mchid = sb.cfg.sp_mchid, sub_mchid = sb.cfg.sub_mchid })
      assert.equal("SUCCESS", assert(ci:query { out_trade_no = oi.out_trade_no }).trade_state)
      local reqs = sb:requests()
      assert.equal(("/v3/global/transactions/out-trade-no/%s?sp_mchid=%s&sub_mchid=%s")
        :format(oi.out_trade_no, sb.cfg.sp_mchid, sb.cfg.sub_mchid), reqs[#reqs].target)
    end)
  end)

  describe("request", function()
    it("makes any signed, verified v3 call", function()
      local c = sb:client()
      local o = new_order("SUCCESS")
      local r = assert(c:request { method = "GET", path = "/v3/global/transactions/out-trade-no/" .. o.out_trade_no,
        query = { mchid = sb.cfg.mchid } })
      assert.equal(200, r.status)
      assert.equal("SUCCESS", r.body.trade_state)
      assert.matches('"trade_state"', r.raw)
      assert.is_string(r.headers["request-id"])
      local r2 = assert(c:request { method = "POST",
        path = "/v3/global/micropay/transactions/out-trade-no/" .. o.out_trade_no .. "/reverse",
        body = { mchid = sb.cfg.mchid } })
      assert.equal(204, r2.status)
      assert.equal("", r2.raw)
      local _, err = c:request { method = "GET", path = "/v3/global/nothing-here" }
      assert.equal("RESOURCE_NOT_EXISTS", err.code)
    end)
  end)

  describe("a user's transport function", function()
    it("gets the signed request and its answer goes through the same verification", function()
      local inner = require("wxpay.transport").curl { ca_file = sb.cfg.ca_file, timeout_ms = 5000,
        connect_timeout_ms = 2000 }
      local seen = {}
      local c = sb:client { transport = function(req)
        seen[#seen + 1] = req
        local res, err = inner.request(req)
        if not res then return nil, err end
        local h = {}
        for k, v in pairs(res.headers) do h[k:upper()] = v end -- any case must do
        return { status = res.status, headers = h, body = res.body }
      end }
      local o = new_order("SUCCESS")
      assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
      assert.equal("POST", seen[1].method)
      assert.equal(sb.cfg.base_url .. "/v3/global/micropay/transactions/out-trade-no/" .. o.out_trade_no
        .. "/reverse", seen[1].url)
      assert.matches("^WECHATPAY2%-SHA256%-RSA2048 ", seen[1].headers.Authorization)
      assert.equal('{"mchid":"' .. sb.cfg.mchid .. '"}', seen[1].body)
      assert.is_number(seen[1].timeout_ms)
      assert.equal("NOTPAY", (c:query { out_trade_no = new_order("NOTPAY").out_trade_no }).trade_state)
      inner.close()
    end)

    it("a failing transport is NETWORK_ERROR, a forged 204 from it is BAD_SIGNATURE", function()
      local c = sb:client { transport = function() return nil, "no route to the moon" end }
      local ok, err = c:revoke { out_trade_no = "T-FN1" }
      assert.is_nil(ok)
      assert.equal("NETWORK_ERROR", err.code)
      assert.matches("no route to the moon", err.message)
      local forged = sb:client { transport = function() return { status = 204, headers = {}, body = "" } end }
      ok, err = forged:revoke { out_trade_no = "T-FN2" }
      assert.is_nil(ok)
      assert.equal("BAD_SIGNATURE", err.code)
      local broken = sb:client { transport = function() return { headers = {} } end }
      ok, err = broken:revoke { out_trade_no = "T-FN3" }
      assert.is_nil(ok)
      assert.equal("BAD_RESPONSE", err.code)
    end)
  end)

  describe("keep-alive", function()
    it("uses one TLS connection for 50 calls", function()
      local c = sb:client()
      local o = new_order("SUCCESS")
      assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
      local before = sb:stats()
      for _ = 1, 25 do
        assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
        assert(c:query { out_trade_no = o.out_trade_no })
      end
      local after = sb:stats()
      assert.equal(0, after.handshakes - before.handshakes)
      assert.equal(50, after.requests - before.requests)
      c:close()
      -- a new client makes at most one new connection for its calls (none when the
      -- process-wide pool, kept alive by a client not yet collected, still has one)
      local c2 = sb:client()
      for _ = 1, 5 do assert.is_true(c2:revoke { out_trade_no = o.out_trade_no }) end
      local new = sb:stats().handshakes - after.handshakes
      assert(new == 0 or new == 1, ("%d new handshakes for 5 calls"):format(new))
      c2:close()
    end)
  end)

  describe("arguments", function()
    local c
    before_each(function() c = sb:client() end)

    it("bad data is INVALID_ARGUMENT and sends nothing", function()
      local before = sb:stats().requests
      local cases = {
        {}, { out_trade_no = "" }, { out_trade_no = ("1"):rep(33) }, { out_trade_no = "a/b" },
        { out_trade_no = "a b" }, { out_trade_no = "../x" }, { out_trade_no = "a\r\nX: y" },
        { transaction_id = "12ab" }, { transaction_id = "" }, { transaction_id = ("1"):rep(33) },
        { transaction_id = "1", out_trade_no = "A" }, { out_trade_no = "A", sub_mchid = "123" },
      }
      for i, args in ipairs(cases) do
        local ok, err = c:revoke(args)
        assert.is_nil(ok, i)
        assert.equal("INVALID_ARGUMENT", err.code, i)
        local order, qerr = c:query(args)
        assert.is_nil(order, i)
        assert.equal("INVALID_ARGUMENT", qerr.code, i)
      end
      local ci = sb:client({ sub_mchid = false }, "institutional")
      local _, err = ci:revoke { out_trade_no = "A" }
      assert.equal("INVALID_ARGUMENT", err.code)
      _, err = ci:revoke { out_trade_no = "A", sub_mchid = "12x" }
      assert.equal("INVALID_ARGUMENT", err.code)
      assert.equal(before, sb:stats().requests)
    end)

    it("wrong types raise", function()
      assert.has_error(function() c:revoke("x") end)
      assert.has_error(function() c:revoke() end)
      assert.has_error(function() c:revoke { out_trade_no = 123 } end)
      assert.has_error(function() c:revoke { out_trade_no = {} } end)
      assert.has_error(function() c:revoke { out_trade_no = true } end)
      assert.has_error(function() c:revoke { transaction_id = 4200000000 } end)
      assert.has_error(function() c:query { out_trade_no = "A", sub_mchId = "1" } end)
      assert.has_error(function() c:request { method = "BREW", path = "/v3/x" } end)
    end)

    it("a closed client raises on any call", function()
      c:close()
      c:close()
      assert.has_error(function() c:revoke { out_trade_no = "A" } end, nil)
      local ok, err = pcall(c.query, c, { out_trade_no = "A" })
      assert.is_false(ok)
      assert.matches("closed", err)
      assert.matches("closed", tostring(c))
    end)
  end)

  describe("errors module", function()
    it("has a constant and advice for every code", function()
      for _, code in ipairs { "SYSTEM_ERROR", "INVALID_TRANSACTIONID", "PARAM_ERROR", "REVERSE_EXPIRE",
        "INVALID_REQUEST", "TRADE_ERROR", "USERPAYING", "SIGN_ERROR", "NO_AUTH", "ORDER_NOT_EXIST",
        "RESOURCE_NOT_EXISTS", "RATELIMIT_EXCEEDED", "SERVICE_UNAVAILABLE", "INVALID_ARGUMENT",
        "CONFIG_ERROR", "NETWORK_ERROR", "TIMEOUT", "TLS_ERROR", "BAD_SIGNATURE", "BAD_RESPONSE" } do
        assert.equal(code, wxpay.errors[code])
        local i = wxpay.errors.info(code)
        assert.is_string(i.description)
        assert.is_string(i.action)
        assert.is_boolean(i.retryable)
      end
      assert.equal("Call the Result View API of the scanned order immediately to view the current order "
        .. "status and decide the next step according to the status.", wxpay.errors.info("SYSTEM_ERROR").action)
      assert.is_true(wxpay.errors.info("USERPAYING").retryable)
      assert.is_false(wxpay.errors.info("TRADE_ERROR").retryable)
      assert.matches("refund", tostring(wxpay.errors.info("REVERSE_EXPIRE")))
    end)
  end)
end)
