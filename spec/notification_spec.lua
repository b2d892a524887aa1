-- client:notification(headers, body): what the sandbox signs and encrypts
-- (POST /notify/send with "deliver": false gives the exact headers and body
-- it would POST), checked in the documented order; every fault refused with
-- its code and nothing of the resource in the error.
local wxpay = require "wxpay"
local unpack = rawget(table, "unpack") or rawget(_G, "unpack")
local core = require "wxpay.core"
local H = require "helpers"

local sb

-- A notification the sandbox built and signed (not sent): {headers=, body=, plaintext=, id=}.
local function build(spec)
  spec = spec or {}
  spec.event_type = spec.event_type or "TRANSACTION.SUCCESS"
  spec.resource = spec.resource or { out_trade_no = H.order_no("NT"), trade_state = "SUCCESS",
    marker = "RESOURCE-MARKER-" .. H.order_no("M") }
  spec.deliver = false
  local st, n = sb:control("POST", "/notify/send", spec)
  assert(st == 200, "notify/send failed: " .. tostring(st))
  n.body = assert(core.b64decode(n.body_base64))
  return n
end

local function client(over)
  over = over or {}
  if over.apiv3_key == nil then over.apiv3_key = sb.cfg.apiv3_key end
  return sb:client(over)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The error must say what failed and hold nothing of the resource or the key.
local function refused(c, n, code, headers, body)
  local ev, err = c:notification(headers or n.headers, body or n.body)
  assert.is_nil(ev)
  assert.is_table(err)
  assert.equal(code, err.code)
  local text = tostring(err)
  for k, v in pairs(err) do
    if type(v) == "string" then text = text .. " " .. k .. "=" .. v end
  end
  assert.is_nil(text:find(n.plaintext, 1, true))
  assert.is_nil(text:find("RESOURCE-MARKER", 1, true))
  assert.is_nil(text:find(sb.cfg.apiv3_key, 1, true))
  return err
end

describe("notification", function()
  setup(function() sb = H.sandbox("notification") end)
  teardown(function() sb:stop() end)
  before_each(function()
    sb:reset()
    sb:control("POST", "/signing", { mode = "certificate" })
  end)

  it("verifies and decrypts a notification into the documented event", function()
    local c = client()
    local n = build { event_type = "TRANSACTION.SUCCESS" }
    local ev = assert(c:notification(n.headers, n.body))
    assert.equal(n.id, ev.id)
    assert.equal("TRANSACTION.SUCCESS", ev.event_type)
    assert.equal("encrypt-resource", ev.resource_type)
    assert.equal("支付成功", ev.summary)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", ev.create_time)
    assert.equal("transaction", ev.original_type)
    assert.equal(n.plaintext, ev.plaintext)
    assert.equal("SUCCESS", ev.resource.trade_state)
    assert.matches("^RESOURCE%-MARKER%-", ev.resource.marker)
    assert.is_false(ev.seen)
  end)

  it("a REFUND.SUCCESS notification too (AAD refund)", function()
    local c = client()
    local n = build { event_type = "REFUND.SUCCESS", resource = { refund_status = "SUCCESS",
      out_trade_no = "R1" } }
    local ev = assert(c:notification(n.headers, n.body))
    assert.equal("REFUND.SUCCESS", ev.event_type)
    assert.equal("refund", ev.original_type)
    assert.equal("SUCCESS", ev.resource.refund_status)
  end)

  it("header names in any case; a list of equal copies is one header", function()
    local c = client()
    local n = build()
    local h = {}
    for k, v in pairs(n.headers) do h[k:upper()] = v end
    assert.is_table(c:notification(h, n.body))
    local n2 = build()
    local h2 = {}
    for k, v in pairs(n2.headers) do h2[k:lower()] = v end
    h2["wechatpay-serial"] = { h2["wechatpay-serial"], h2["wechatpay-serial"] }
    assert.is_table(c:notification(h2, n2.body))
  end)

  it("a repeated id is accepted again and marked seen (never refused)", function()
    local c = client()
    local n = build { id = "fixed-" .. H.order_no("ID") }
    local first = assert(c:notification(n.headers, n.body))
    assert.is_false(first.seen)
    -- WeChat's retry: same body, signed anew
    local n2 = build { id = n.id, resource = { out_trade_no = "again" } }
    local second = assert(c:notification(n2.headers, n2.body))
    assert.equal(n.id, second.id)
    assert.is_true(second.seen)
    -- another client keeps its own record (in-process table per client); WeChat
    -- signs every try anew, so it gets a third signing of the same id
    local n3 = build { id = n.id }
    assert.is_false(assert(client():notification(n3.headers, n3.body)).seen)
    -- the very same bytes again (same nonce) are a replay, refused like any answer's
    local _, err = c:notification(n2.headers, n2.body)
    assert.equal("BAD_SIGNATURE", err.code)
    assert.matches("replayed", err.message)
  end)

  it("the seen-id record is bounded and expires", function()
    local c = client()
    local N = require("wxpay.notification")
    for i = 1, N.SEEN_MAX + 5 do assert.is_false(c:_seen("bulk-" .. i)) end
    assert.is_true(c:_seen("bulk-" .. (N.SEEN_MAX + 5)))
    local s = c._seen_ids
    local count = 0
    for _ in pairs(s.at) do count = count + 1 end
    assert.equal(N.SEEN_MAX, count)
    assert.equal(N.SEEN_MAX, s.tail - s.head + 1)
    assert.is_false(c:_seen("bulk-1"))          -- the oldest made room
    -- expiry: an id remembered longer ago than SEEN_TTL is forgotten
    local c2 = client()
    assert.is_false(c2:_seen("old"))
    assert.is_true(c2:_seen("old"))
    c2._seen_ids.at["old"] = c2._seen_ids.at["old"] - N.SEEN_TTL - 1
    assert.is_false(c2:_seen("old"))
    assert.is_true(c2:_seen("old"))
  end)

  it("public-key mode (PUB_KEY_ID_… serial) is accepted by a client with the public key", function()
    local c = client { public_key = sb.cfg.public_key, public_key_id = sb.cfg.public_key_id }
    local n = build { mutate = "public_key" }
    assert.matches("^PUB_KEY_ID_", n.headers["Wechatpay-Serial"])
    local ev = assert(c:notification(n.headers, n.body))
    assert.equal(n.plaintext, ev.plaintext)
    -- a client without that key refuses it
    refused(client(), n, wxpay.errors.BAD_SIGNATURE)
  end)

  it("a client with only apiv3_key downloads the certificates first (same rules as answers)", function()
    local c = client { platform_certs = false }
    local before = sb:stats().downloads
    local n = build()
    assert.is_table(c:notification(n.headers, n.body))
    assert.equal(before + 1, sb:stats().downloads)
    local n2 = build()
    assert.is_table(c:notification(n2.headers, n2.body))
    assert.equal(before + 1, sb:stats().downloads)   -- kept, not downloaded per call
  end)

  it("an unknown serial: one refresh, then BAD_SIGNATURE", function()
    local c = client()
    local n = build()
    assert.is_table(c:notification(n.headers, n.body))   -- the first download (apiv3_key)
    local before = sb:stats().downloads
    local err = refused(c, build { mutate = "unknown_serial" }, wxpay.errors.BAD_SIGNATURE)
    assert.matches("unknown", err.message)
    assert.equal(before + 1, sb:stats().downloads)
    refused(c, build { mutate = "unknown_serial" }, wxpay.errors.BAD_SIGNATURE)
    assert.equal(before + 1, sb:stats().downloads)    -- at most one a minute
  end)

  describe("refuses", function()
    local cases = {
      { "forged (signature over other bytes)", "bad_signature", "BAD_SIGNATURE", "does not verify" },
      { "a signature made by another key", "other_key", "BAD_SIGNATURE", "does not verify" },
      { "replayed-stale (timestamp 600 s old)", "stale", "BAD_SIGNATURE", "timestamp" },
      { "missing headers", "no_headers", "BAD_SIGNATURE", "carries no" },
      { "a wrong algorithm", "wrong_algorithm", "BAD_NOTIFICATION", "algorithm" },
      { "a wrong AAD", "wrong_aad", "BAD_NOTIFICATION", "decrypt" },
      { "ciphertext under another key", "other_apiv3_key", "BAD_NOTIFICATION", "decrypt" },
      { "a truncated ciphertext", "truncated_ciphertext", "BAD_NOTIFICATION", "decrypt" },
      { "a body that is not JSON", "not_json_body", "BAD_NOTIFICATION", "not JSON" },
      { "a plaintext that is not JSON", "plaintext_not_json", "BAD_NOTIFICATION", "not a JSON" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " (" .. case[2] .. ") with " .. case[3], function()
        local err = refused(client(), build { mutate = case[2] }, case[3])
        assert.matches(case[4], err.message, 1, true)
        assert.equal(case[3] == "BAD_NOTIFICATION", err.verified)
      end)
    end

    it("a truncated body (signature no longer matches)", function()
      local n = build()
      refused(client(), n, "BAD_SIGNATURE", nil, n.body:sub(1, #n.body - 20))
    end)

    it("each missing Wechatpay-* header", function()
      local n = build()
      for _, name in ipairs { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature",
        "Wechatpay-Serial" } do
        local h = copy(n.headers)
        h[name] = nil
        local err = refused(client(), n, "BAD_SIGNATURE", h)
        assert.matches("carries no", err.message)
      end
    end)

    it("a header list with two different serials", function()
      local n = build()
      local h = copy(n.headers)
      h["Wechatpay-Serial"] = { n.headers["Wechatpay-Serial"], ("0"):rep(40) }
      local err = refused(client(), n, "BAD_SIGNATURE", h)
      assert.matches("different values", err.message)
    end)

    it("one header under two spellings with different values", function()
      local n = build()
      local h = copy(n.headers)
      h["wechatpay-nonce"] = "other"
      refused(client(), n, "BAD_SIGNATURE", h)
    end)

    it("an oversized body (over max_body_bytes) before any other check", function()
      local c = client { max_body_bytes = 256 }
      local n = build()
      assert.is_true(#n.body > 256)
      local err = refused(c, n, "BAD_NOTIFICATION")
      assert.matches("max_body_bytes", err.message)
      -- before the headers are even looked at
      refused(c, n, "BAD_NOTIFICATION", {})
    end)

    it("a client without apiv3_key: CONFIG_ERROR", function()
      local c = sb:client()      -- platform_certs only
      local err = refused(c, build(), "CONFIG_ERROR")
      assert.matches("apiv3_key", err.message)
    end)

    it("wrong argument types and a closed client raise", function()
      local c = client()
      assert.has_error(function() c:notification(nil, "{}") end)
      assert.has_error(function() c:notification({}, nil) end)
      c:close()
      assert.has_error(function() c:notification({}, "{}") end)
    end)
  end)

  describe("wxpay notification (the CLI)", function()
    local lua = os.getenv("WXPAY_TEST_LUA") or (rawget(_G, "jit") and "luajit" or "lua5.4")
    local tmp

    local function q(v) return "'" .. tostring(v):gsub("'", "'\\''") .. "'" end

    -- runs bin/wxpay with a clean environment; returns stdout, stderr, exit code
    local function wxpay_cli(args, stdin)
      local parts = { "env -i PATH=" .. q(os.getenv("PATH")), "HOME=" .. q(tmp), lua, "bin/wxpay" }
      for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
      local cmd = table.concat(parts, " ") .. " 2>" .. q(tmp .. "/err") .. " <" .. q(stdin or "/dev/null")
      local out, _, rc = H.sh(cmd)
      local err = H.read(tmp .. "/err") or ""
      assert.is_nil((out .. err):find(sb.cfg.apiv3_key, 1, true))
      return out, err, rc
    end

    local function files(n)
      local lines = { "POST /wxpay/notify HTTP/1.1" }
      for k, v in pairs(n.headers) do lines[#lines + 1] = k .. ": " .. v end
      H.write(tmp .. "/headers", table.concat(lines, "\n") .. "\n")
      H.write(tmp .. "/body", n.body)
      return { "--headers", tmp .. "/headers", "--body", tmp .. "/body" }
    end

    setup(function()
      tmp = os.tmpname()
      os.remove(tmp)
      assert(os.execute("mkdir -p " .. q(tmp)))
    end)
    teardown(function() os.execute("rm -rf " .. q(tmp)) end)

    it("--headers FILE --body FILE prints the verified event (text and --json)", function()
      local n = build()
      local args = files(n)
      table.insert(args, 1, "notification")
      table.insert(args, 1, sb.cfg.client_config)
      table.insert(args, 1, "--config")
      local out, err, rc = wxpay_cli(args)
      assert.equal(0, rc, err)
      assert.matches("verified and decrypted", out, 1, true)
      assert.matches(n.id, out, 1, true)
      assert.matches(n.plaintext, out, 1, true)
      args[#args + 1] = "--json"
      out, err, rc = wxpay_cli(args)
      assert.equal(0, rc, err)
      local j = require("cjson").decode(out)
      assert.is_true(j.ok)
      assert.equal(n.id, j.event.id)
      assert.equal("SUCCESS", j.event.resource.trade_state)
    end)

    it("the raw HTTP request on stdin (CRLF, Content-Length, a trailing newline)", function()
      local n = build()
      local lines = { "POST /wxpay/notify HTTP/1.1" }
      for k, v in pairs(n.headers) do lines[#lines + 1] = k .. ": " .. v end
      H.write(tmp .. "/request", table.concat(lines, "\r\n") .. "\r\n\r\n" .. n.body .. "\n")
      local out, err, rc = wxpay_cli({ "--config", sb.cfg.client_config, "notification" }, tmp .. "/request")
      assert.equal(0, rc, err)
      assert.matches(n.id, out, 1, true)
    end)

    it("exit 1 for a forged or undecryptable one (nothing of the resource shown), 2 for usage/config", function()
      local args = files(build { mutate = "bad_signature" })
      local _, err, rc = wxpay_cli { "--config", sb.cfg.client_config, "notification", unpack(args) }
      assert.equal(1, rc)
      assert.matches("BAD_SIGNATURE", err, 1, true)
      assert.is_nil(err:find("RESOURCE-MARKER", 1, true))
      args = files(build { mutate = "wrong_aad" })
      local out
      out, err, rc = wxpay_cli { "--config", sb.cfg.client_config, "notification", "--json", unpack(args) }
      assert.equal(1, rc)
      assert.equal("BAD_NOTIFICATION", require("cjson").decode(out).error.code)
      assert.is_nil((out .. err):find("RESOURCE-MARKER", 1, true))
      _, _, rc = wxpay_cli { "--config", sb.cfg.client_config, "notification", "--headers", tmp .. "/headers" }
      assert.equal(2, rc)
      local c = sb.cfg
      _, err, rc = wxpay_cli { "--mchid", c.mchid, "--serial-no", c.serial_no, "--private-key", c.private_key,
        "--platform-cert", c.platform_cert, "notification", unpack(args) }
      assert.equal(2, rc)
      assert.matches("CONFIG_ERROR", err, 1, true)
    end)
  end)

  it("BAD_NOTIFICATION and BAD_SIGNATURE are known codes with advice", function()
    assert.equal("BAD_NOTIFICATION", wxpay.errors.BAD_NOTIFICATION)
    local i = wxpay.errors.info("BAD_NOTIFICATION")
    assert.matches("decrypt", i.description)
    assert.is_false(i.retryable)
    assert.matches("notification", wxpay.errors.info("BAD_SIGNATURE").description)
  end)
end)
