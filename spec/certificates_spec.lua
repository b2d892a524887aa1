-- Platform certificates and public keys: download, decrypt, rotate, verify.
local wxpay = require "wxpay"
local H = require "helpers"

local sb

local function v3_client(over)
  over = over or {}
  over.platform_certs = false
  over.apiv3_key = over.apiv3_key or sb.cfg.apiv3_key
  return sb:client(over)
end

local function paid()
  return sb:order { out_trade_no = H.order_no("K"), trade_state = "SUCCESS" }
end

describe("certificates", function()
  setup(function() sb = H.sandbox("certs") end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:reset()
    sb:control("POST", "/signing", { mode = "certificate" })
  end)

  it("a client with only apiv3_key downloads, verifies and revokes", function()
    local c = v3_client()
    local o = paid()
    local before = sb:stats().downloads
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    assert.equal(before + 1, sb:stats().downloads)
    local list = assert(c:certificates())
    local found
    for _, e in ipairs(list) do
      if e.serial_no == sb.cfg.platform_serial then found = e end
    end
    assert.is_table(found)
    assert.equal("download", found.source)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", found.effective_time)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", found.expire_time)
    -- more calls, no more downloads
    for _ = 1, 5 do assert.is_true(c:revoke { out_trade_no = o.out_trade_no }) end
    assert.equal(before + 1, sb:stats().downloads)
    c:close()
  end)

  it("lists configured certificates with source=config", function()
    local c = sb:client()
    local list = assert(c:certificates())
    assert.equal(1, #list)
    assert.equal(sb.cfg.platform_serial, list[1].serial_no)
    assert.equal("config", list[1].source)
  end)

  it("an unknown-serial storm causes at most one download", function()
    local c = v3_client()
    local o = paid()
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    local d0 = sb:stats().downloads
    sb:fault { fault = "unknown_serial", count = 100, match = "/reverse" }
    for _ = 1, 100 do
      local ok, err = c:revoke { out_trade_no = o.out_trade_no }
      assert.is_nil(ok)
      assert.equal("BAD_SIGNATURE", err.code)
    end
    assert.is_true(sb:stats().downloads - d0 <= 1)
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
  end)

  it("a wrong APIv3 key is a clear error and nothing is stored", function()
    local c = v3_client { apiv3_key = ("k"):rep(32) }
    local ok, err = c:revoke { out_trade_no = "K-WRONG" }
    assert.is_nil(ok)
    assert.equal("BAD_RESPONSE", err.code)
    assert.matches("decrypt", err.message)
    local list, lerr = c:certificates()
    assert.is_nil(list)
    assert.is_table(lerr)
  end)

  it("tampered ciphertext (the sandbox encrypting with another key) is refused", function()
    local st = sb:control("POST", "/apiv3_key", { key = ("z"):rep(32) })
    assert.equal(200, st)
    local c = v3_client()
    local ok, err = c:revoke { out_trade_no = "K-TAMPER" }
    sb:control("POST", "/apiv3_key", { key = sb.cfg.apiv3_key })
    assert.is_nil(ok)
    assert.matches("authentication failed", err.message)
    assert.equal(0, #(c.keys:list()))
  end)

  it("a forged download signature stores nothing", function()
    local c = v3_client()
    sb:fault { fault = "flip_signature", match = "/v3/global/certificates" }
    local ok, err = c:revoke { out_trade_no = "K-FORGED" }
    assert.is_nil(ok)
    assert.equal("BAD_SIGNATURE", err.code)
    assert.equal(0, #(c.keys:list()))
  end)

  it("skips an expired certificate in the list", function()
    local st, extra = sb:control("POST", "/certificates/extra", { kind = "expired" })
    assert.equal(200, st)
    local c = v3_client()
    local serials = {}
    for _, e in ipairs(assert(c:certificates())) do serials[e.serial_no] = true end
    assert.is_nil(serials[extra.serial])
    assert.is_true(serials[sb.cfg.platform_serial])
  end)

  it("verifies with a WeChat Pay public key (PUB_KEY_ID_…)", function()
    sb:control("POST", "/signing", { mode = "public_key" })
    local c = sb:client { platform_certs = false, public_key = sb.cfg.public_key,
      public_key_id = sb.cfg.public_key_id }
    local o = paid()
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    local list = c:certificates()
    assert.equal(sb.cfg.public_key_id, list[1].serial_no)
    assert.equal("public_key", list[1].source)
    -- the same client refuses answers signed by the platform certificate it does not hold
    sb:control("POST", "/signing", { mode = "certificate" })
    local ok, err = c:revoke { out_trade_no = o.out_trade_no }
    assert.is_nil(ok)
    assert.equal("BAD_SIGNATURE", err.code)
  end)

  it("holds certificates and a public key in one store", function()
    local c = sb:client { public_key = sb.cfg.public_key, public_key_id = sb.cfg.public_key_id }
    local o = paid()
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    sb:control("POST", "/signing", { mode = "public_key" })
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    assert.equal(2, #c:certificates())
  end)

  it("rejects a public key given as certificate and a certificate given as public key", function()
    local c, err = wxpay.new(sb:options { platform_certs = { sb.cfg.public_key } })
    assert.is_nil(c)
    assert.equal("CONFIG_ERROR", err.code)
    c, err = wxpay.new(sb:options { public_key = sb.cfg.platform_cert, public_key_id = "PUB_KEY_ID_1" })
    assert.is_nil(c)
    assert.equal("CONFIG_ERROR", err.code)
  end)
  -- last: the sandbox keeps its rotated key for the rest of the file
  it("follows a rotation without a restart, with one more download", function()
    local c = v3_client()
    local o = paid()
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    local d0 = sb:stats().downloads
    local st, rot = sb:control("POST", "/rotate")
    assert.equal(200, st)
    assert.not_equal(sb.cfg.platform_serial, rot.serial)
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    assert.equal(d0 + 1, sb:stats().downloads)
    local serials = {}
    for _, e in ipairs(c:certificates()) do serials[e.serial_no] = true end
    assert.is_true(serials[rot.serial])
    assert.is_true(serials[sb.cfg.platform_serial]) -- old and new both kept during rotation
    -- a client configured with only the old certificate cannot verify the new key
    local old = sb:client()
    local ok, err = old:revoke { out_trade_no = o.out_trade_no }
    assert.is_nil(ok)
    assert.equal("BAD_SIGNATURE", err.code)
    assert.matches("unknown", err.message)
    c:close(); old:close()
  end)

end)
