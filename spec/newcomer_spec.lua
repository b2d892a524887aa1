-- Issue 16 item 7: the small things a newcomer tripped over, each checked for real
-- against the sandbox (no mocks): error info for an error object and for nothing,
-- ids as JSON numbers, platform_certs as one string, a missing serial_no, JSON nulls in
-- an error's detail, and `cancel` logging a failed intermediate query.
local H = require "helpers"
local wxpay = require "wxpay"
local cjson = require "cjson"

describe("newcomer fixes", function()
  local sb
  setup(function() sb = H.sandbox("newcomer") end)
  teardown(function() sb:stop() end)

  it("errors.info accepts an error object, and says 'No code given' for nothing", function()
    local c = sb:client()
    local ok, err = c:revoke { out_trade_no = H.order_no("NX") }
    assert.is_nil(ok)
    local i = wxpay.errors.info(err)
    assert.equal("ORDER_NOT_EXIST", i.code)
    assert.equal(wxpay.errors.info("ORDER_NOT_EXIST").action, i.action)
    local none = wxpay.errors.info()
    assert.equal("No code given", none.description)
    assert.is_nil(tostring(none):find("nil", 1, true))
    assert.is_false(none.retryable)
    c:close()
  end)

  it("TRADE_ERROR's advice covers an order that was already refunded", function()
    assert.matches("already refunded", wxpay.errors.info("TRADE_ERROR").action)
  end)

  it("a config file with ids as JSON numbers and platform_certs as one string works", function()
    local dir = os.tmpname()
    os.remove(dir)
    H.sh("mkdir -p " .. dir)
    local o = sb:options()
    H.write(dir .. "/merchant.json", ([[{"mchid": %s, "serial_no": "%s", "private_key": "%s",
      "platform_certs": "%s", "base_url": "%s", "ca_file": "%s"}]]):format(sb.cfg.mchid, o.serial_no,
      o.private_key, o.platform_certs[1], o.base_url, o.ca_file))
    local c = assert(wxpay.new(dir .. "/merchant.json"))
    assert.equal(sb.cfg.mchid, c.mchid)
    assert.equal("string", type(c.mchid))
    local no = H.order_no("NUM")
    sb:order { out_trade_no = no, trade_state = "SUCCESS" }
    assert.is_true((c:revoke { out_trade_no = no }))
    c:close()
    -- a table with a string platform_certs, institutional ids as numbers
    local ci = assert(wxpay.new(sb:options({ platform_certs = o.platform_certs[1],
      sp_mchid = tonumber(sb.cfg.sp_mchid), sub_mchid = tonumber(sb.cfg.sub_mchid) }, "institutional")))
    assert.equal(sb.cfg.sub_mchid, ci.sub_mchid)
    ci:close()
    H.sh("rm -rf " .. dir)
  end)

  it("refuses ids that are not whole positive numbers", function()
    for _, bad in ipairs { 1.5, -3, 0, 2 ^ 60, 0 / 0 } do
      local c, err = wxpay.new(sb:options { mchid = bad })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("mchid must be digits", err.message)
    end
  end)

  it("a missing serial_no is reported as missing", function()
    local c, err = wxpay.new(sb:options { serial_no = false })
    assert.is_nil(c)
    assert.equal("CONFIG_ERROR", err.code)
    assert.matches("^missing serial_no", err.message)
  end)

  it("JSON nulls in an error's detail are left out, not shown as userdata", function()
    local c = sb:client()
    sb:fault { fault = "status", status = 400, code = "PARAM_ERROR", message = "bad field",
      detail = { field = "out_trade_no", value = cjson.null, issue = { location = cjson.null, n = 1 } } }
    local ok, err = c:revoke { out_trade_no = H.order_no("NUL") }
    assert.is_nil(ok)
    assert.equal("PARAM_ERROR", err.code)
    assert.equal("out_trade_no", err.detail.field)
    assert.is_nil(err.detail.value)
    assert.is_nil(err.detail.issue.location)
    assert.equal(1, err.detail.issue.n)
    assert.is_nil(tostring(err):find("userdata", 1, true))
    c:close()
  end)

  it("cancel logs a failed intermediate query (what wxpay -v shows)", function()
    local lines = {}
    local c = sb:client { logger = function(level, msg, f) lines[#lines + 1] = { level, msg, f } end }
    local no = H.order_no("CQ")
    sb:order { out_trade_no = no, trade_state = "SUCCESS" }
    sb:fault { fault = "status", status = 500, code = "SYSTEM_ERROR", method = "POST", match = no }
    sb:fault { fault = "status", status = 503, code = "SERVICE_UNAVAILABLE", method = "GET", match = no }
    local state, info = c:cancel { out_trade_no = no, deadline_ms = 20000 }
    assert.equal("REVOKED", state, tostring(info))
    local found
    for _, l in ipairs(lines) do
      if l[2] == "query before resending failed" then found = l end
    end
    assert(found, "no log line for the failed query")
    assert.equal("warn", found[1])
    assert.equal("SERVICE_UNAVAILABLE", found[3].code)
    assert.equal(503, found[3].status)
    c:close()
  end)
end)
