-- Hostile input: every argument a caller (or a config file) can hand us, bent
-- every way we could think of.  Bad data -> nil, INVALID_ARGUMENT (calls) or
-- CONFIG_ERROR (wxpay.new); wrong Lua types raise; and nothing reaches the
-- sandbox (its request and connection counters do not move).
local wxpay = require "wxpay"
local H = require "helpers"

local errors = wxpay.errors
local sb, common, inst
local tmp

-- api.md's rules, written out independently of the library (an oracle that
-- keeps the lists below honest: every value must really be invalid).
local function valid_tid(s) return #s >= 1 and #s <= 32 and not s:find("[^0-9]") end
local function valid_otn(s) return #s >= 1 and #s <= 32 and not s:find("[^0-9A-Za-z_|*@%-]") end
local function valid_sub(s) return #s >= 1 and #s <= 32 and not s:find("[^0-9]") end

-- Values that are wrong as any order id.
local GENERIC = {
  "", " ", "  ", "\t", "\n", "\r", "\r\n", "\0", "a\0b", "123\0", "\0" .. "123",
  "../../etc/passwd", "..", ".", "./", "../", "/", "//", "a/b", "1/2", "/123", "123/",
  "?", "a?b=c", "123?x=1", "#", "a#b", "123#", "%2F", "123%2F456", "..%2F..%2F", "%2e%2e",
  "%00", "%0d%0aX-Injected:%201", "%", "%%", "a%20b",
  "1\r\nX-Injected: 1", "1\nHost: evil", "1\rX", "x\r\n\r\nGET / HTTP/1.1",
  " 123", "123 ", "1 2", "1\t2", ("1"):rep(33), ("a"):rep(33), ("1"):rep(1000),
  ("A"):rep(65536), "\255\254", "\192\128", "\237\160\128", "\128", "abc\200",
  "\240\159\152\128", "订单", "é", "１２３", "\226\128\174123", "\127", "\27[31m",
  "+1", "1.5", "1,2", "1;2", "1=2", "1&2", "$1", "!1", "(1)", "[1]", "{1}", "<1>",
  "'1'", "\"1\"", "`1`", "~1", "1\\2", "\\", "^", "${jndi:ldap://x/a}", "%s%s%n",
  "<script>alert(1)</script>", "'; DROP TABLE orders; --", "http://evil/", "//evil.com",
}

-- Valid out_trade_no characters that are still not a transaction_id.
local TID_ONLY = { "abc", "A1", "1_2", "1-2", "1|2", "1*2", "1@2", "-1", "1e5", "nil", "NaN",
  "0x1F", "ORDER1" }

local WRONG_TYPES = { 0, 123, -1, 1.5, math.huge, 0 / 0, 2 ^ 53, {}, { "1" }, { out_trade_no = "1" },
  true, false, print, coroutine.create(print), io.stdout }

local function counters()
  local s = sb:stats()
  return s.requests, s.connections
end

-- Runs `body`, then checks the sandbox saw nothing.
local function nothing_sent(body)
  local r0, c0 = counters()
  body()
  local r1, c1 = counters()
  assert.equal(r0, r1, "a request reached the sandbox")
  assert.equal(c0, c1, "a connection reached the sandbox")
end

local function invalid(res, err, label)
  assert.is_nil(res, label)
  assert.is_true(errors.is(err), label)
  assert.equal(errors.INVALID_ARGUMENT, err.code, label .. ": " .. tostring(err))
  assert.is_false(err.retryable)
  assert.is_string(tostring(err))
end

local function invalid_call(f, label)
  local res, err = f()
  invalid(res, err, label)
end

local function raises(f, label)
  local ok, msg = pcall(f)
  assert.is_false(ok, label .. " did not raise")
  assert.is_string(msg)
  assert.truthy(msg:find("wxpay", 1, true), label .. ": " .. tostring(msg))
end

local function show(v)
  if type(v) ~= "string" then return tostring(v) end
  return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v):gsub("\\?\n", "\\n")
end

local CALLS = { "revoke", "query", "cancel" }

describe("hostile input", function()
  setup(function()
    sb = H.sandbox("hostile")
    common = sb:client()
    inst = sb:client(nil, "institutional")
    tmp = os.tmpname()
    os.remove(tmp)
    assert(os.execute("mkdir -p " .. tmp))
  end)
  teardown(function()
    common:close()
    inst:close()
    H.sh("rm -rf " .. tmp)
    sb:stop()
  end)

  describe("order ids", function()
    it("transaction_id: >= 50 bad values -> INVALID_ARGUMENT, nothing sent", function()
      local list = {}
      for _, v in ipairs(GENERIC) do list[#list + 1] = v end
      for _, v in ipairs(TID_ONLY) do list[#list + 1] = v end
      assert.is_true(#list >= 50)
      nothing_sent(function()
        for _, v in ipairs(list) do
          assert.is_false(valid_tid(v), show(v))
          for _, what in ipairs(CALLS) do
            local res, err = common[what](common, { transaction_id = v })
            invalid(res, err, what .. " transaction_id=" .. show(v))
          end
        end
      end)
    end)

    it("out_trade_no: >= 50 bad values -> INVALID_ARGUMENT, nothing sent", function()
      assert.is_true(#GENERIC >= 50)
      nothing_sent(function()
        for _, v in ipairs(GENERIC) do
          assert.is_false(valid_otn(v), show(v))
          for _, what in ipairs(CALLS) do
            local res, err = common[what](common, { out_trade_no = v })
            invalid(res, err, what .. " out_trade_no=" .. show(v))
            res, err = inst[what](inst, { out_trade_no = v })
            invalid(res, err, what .. " (institutional) out_trade_no=" .. show(v))
          end
        end
      end)
    end)

    it("sub_mchid: >= 50 bad values -> INVALID_ARGUMENT, nothing sent", function()
      local list = {}
      for _, v in ipairs(GENERIC) do list[#list + 1] = v end
      for _, v in ipairs(TID_ONLY) do list[#list + 1] = v end
      nothing_sent(function()
        for _, v in ipairs(list) do
          assert.is_false(valid_sub(v), show(v))
          for _, what in ipairs(CALLS) do
            local res, err = inst[what](inst, { out_trade_no = "OK123", sub_mchid = v })
            invalid(res, err, what .. " sub_mchid=" .. show(v))
          end
        end
        -- a well-formed sub_mchid is still refused in common mode
        for _, what in ipairs(CALLS) do
          local res, err = common[what](common, { out_trade_no = "OK123", sub_mchid = "1900000101" })
          invalid(res, err, what .. " sub_mchid in common mode")
        end
      end)
    end)

    it("both ids, neither id -> INVALID_ARGUMENT, nothing sent", function()
      nothing_sent(function()
        for _, what in ipairs(CALLS) do
          for _, c in ipairs { common, inst } do
            for label, args in pairs {
              both = { transaction_id = "4200000001", out_trade_no = "OK123" },
              ["both empty"] = { transaction_id = "", out_trade_no = "" },
              neither = {},
              ["only sub_mchid"] = { sub_mchid = "1900000101" },
            } do
              local res, err = c[what](c, args)
              invalid(res, err, what .. " " .. label)
            end
          end
        end
      end)
    end)

    it("cancel's own fields: bad data -> INVALID_ARGUMENT, wrong types raise", function()
      nothing_sent(function()
        for _, d in ipairs { 0, -1, -1e9, 0 / 0, -math.huge } do
          invalid_call(function() return common:cancel { out_trade_no = "OK123", deadline_ms = d } end,
            "deadline_ms=" .. tostring(d))
        end
        invalid_call(function() return common:cancel { out_trade_no = "OK123", paid_at = 0 / 0 } end, "paid_at=NaN")
        for _, v in ipairs { "100", true, {}, print } do
          raises(function() common:cancel { out_trade_no = "OK123", deadline_ms = v } end, "deadline_ms " .. type(v))
          raises(function() common:cancel { out_trade_no = "OK123", paid_at = v } end, "paid_at " .. type(v))
        end
      end)
    end)

    it("wrong types for the ids and sub_mchid raise, nothing sent", function()
      nothing_sent(function()
        for _, v in ipairs(WRONG_TYPES) do
          for _, what in ipairs(CALLS) do
            raises(function() common[what](common, { transaction_id = v }) end,
              what .. " transaction_id " .. type(v))
            raises(function() common[what](common, { out_trade_no = v }) end,
              what .. " out_trade_no " .. type(v))
            raises(function() inst[what](inst, { out_trade_no = "OK123", sub_mchid = v }) end,
              what .. " sub_mchid " .. type(v))
            -- a wrong type beside a valid id is still a programming error
            raises(function() common[what](common, { out_trade_no = "OK123", transaction_id = v }) end,
              what .. " mixed " .. type(v))
          end
        end
      end)
    end)

    it("a call without its table, or with unknown fields, raises", function()
      nothing_sent(function()
        for _, what in ipairs(CALLS) do
          for _, v in ipairs { "OK123", 123, true, false, print } do
            raises(function() common[what](common, v) end, what .. "(" .. type(v) .. ")")
          end
          raises(function() common[what](common) end, what .. "()")
          raises(function() common[what](common, { out_trade_no = "OK123", amount = 1 }) end, what .. " unknown field")
          raises(function() common[what](common, { out_trade_no = "OK123", [1] = "x" }) end, what .. " array field")
          raises(function() common[what](common, { Out_Trade_No = "OK123" }) end, what .. " wrong case")
        end
        raises(function() common.revoke(nil, { out_trade_no = "OK123" }) end, "revoke without self")
      end)
    end)
  end)

  describe("client:request", function()
    local BAD_BYTES = {}
    setup(function()
      for b = 0, 32 do BAD_BYTES[#BAD_BYTES + 1] = string.char(b) end
      for c in ("\"#<>[\\]^`{|}\127"):gmatch(".") do BAD_BYTES[#BAD_BYTES + 1] = c end
      for b = 128, 255, 9 do BAD_BYTES[#BAD_BYTES + 1] = string.char(b) end
    end)

    it("path: >= 50 bad values -> INVALID_ARGUMENT, nothing sent", function()
      local list = {
        "", "/", "v3/x", "/v2/x", "/V3/x", "/v3", "//v3/x", "https://evil/v3/x", "http://x/v3/",
        "/v3/../x", "/v3/..", "/v3/./x", "/v3/.", "/v3/a/../../b", "/v3/%2e%2e/x", "/v3/%2E%2E",
        "/v3/.%2e/x", "/v3/%2e/x", "/v3/x/..", "/../v3/x", "/v3/x?a=b", "/v3/x?", "/v3/x#f", "/v3/#",
        "/v3/x%", "/v3/x%2", "/v3/x%zz", "/v3/%%", "/v3/x\r\nX-Injected: 1", "/v3/x\0", "/v3/a b",
        "/v3/\240\159\152\128", "/v3/订单", "/v3/" .. ("\255"):rep(40),
      }
      for _, b in ipairs(BAD_BYTES) do list[#list + 1] = "/v3/x" .. b .. "y" end
      assert.is_true(#list >= 50, #list)
      nothing_sent(function()
        for _, p in ipairs(list) do
          for _, m in ipairs { "GET", "POST" } do
            local res, err = common:request { method = m, path = p }
            invalid(res, err, m .. " path=" .. show(p))
          end
        end
      end)
    end)

    it("query string: >= 50 bad values -> INVALID_ARGUMENT, nothing sent", function()
      local list = { "a=b c", "a=b#c", "#", "a=%", "a=%2", "a=%zz", "a=%%", "a=\r\nX: y", "a=\0",
        "a=\240\159\152\128", "a=订单", "a=b\nc", "a=[1]", "a={}", "a=<x>", "a=|", "a=^" }
      for _, b in ipairs(BAD_BYTES) do list[#list + 1] = "a=x" .. b .. "y" end
      assert.is_true(#list >= 50, #list)
      nothing_sent(function()
        for _, q in ipairs(list) do
          local res, err = common:request { method = "GET", path = "/v3/global/certificates", query = q }
          invalid(res, err, "query=" .. show(q))
        end
      end)
    end)

    it("query tables are percent-encoded: hostile keys and values go out as plain %XX", function()
      local q = {}
      for i, v in ipairs(GENERIC) do
        if #v < 200 then q["k" .. i .. v] = v end
      end
      local r0 = counters()
      local res, err = common:request { method = "GET", path = "/v3/global/certificates", query = q }
      assert.is_table(res, err and tostring(err))
      assert.equal(200, res.status)
      assert.equal(r0 + 1, (counters()))
      local log = sb:requests()
      local target = log[#log].target
      assert.truthy(target:match("^/v3/global/certificates%?[%w%-%._~%%=&]+$"), target)
    end)

    it("wrong types raise, nothing sent", function()
      nothing_sent(function()
        for _, v in ipairs(WRONG_TYPES) do
          raises(function() common:request { method = "GET", path = v } end, "path " .. type(v))
          raises(function() common:request { method = v, path = "/v3/global/certificates" } end, "method " .. type(v))
          if type(v) ~= "table" then
            raises(function() common:request { method = "GET", path = "/v3/global/certificates", query = v } end,
              "query " .. type(v))
          end
          if type(v) ~= "table" then
            raises(function() common:request { method = "POST", path = "/v3/x", body = v } end, "body " .. type(v))
          end
          if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
            raises(function() common:request { method = "GET", path = "/v3/x", query = { a = v } } end,
              "query value " .. type(v))
          end
        end
        raises(function() common:request { method = "GET", path = "/v3/x", query = { [1] = "a" } } end, "query key")
        raises(function() common:request { method = "GET", path = "/v3/x", query = { [true] = "a" } } end, "query key")
        raises(function() common:request { method = "TRACE", path = "/v3/x" } end, "method TRACE")
        raises(function() common:request { method = "GET\r\nX: y", path = "/v3/x" } end, "method CRLF")
        raises(function() common:request { method = "GET", path = "/v3/x", extra = 1 } end, "unknown field")
        raises(function() common:request "GET /v3/x" end, "request(string)")
        raises(function() common:request() end, "request()")
        -- data errors in the other fields
        invalid_call(function() return common:request { method = "GET", path = "/v3/x", body = "x" } end,
          "GET with a body")
        invalid_call(function() return common:request { method = "POST", path = "/v3/x", body = { f = print } } end,
          "body not JSON")
      end)
    end)
  end)

  describe("wxpay.new", function()
    local pems = {}
    setup(function()
      local function gen(name, cmd)
        local _, ok = H.sh(cmd:gsub("OUT", tmp .. "/" .. name) .. " 2>&1")
        assert(ok, "openssl failed: " .. name)
        pems[name] = tmp .. "/" .. name
      end
      gen("ec.pem", "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out OUT")
      gen("rsa1024.pem", "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out OUT")
      gen("enc.pem", "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes-128-cbc -pass pass:x -out OUT")
      gen("ec_pub.pem", "openssl pkey -in " .. tmp .. "/ec.pem -pubout -out OUT")
      H.write(tmp .. "/garbage.pem", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
      H.write(tmp .. "/empty.pem", "")
      H.write(tmp .. "/binary.pem", ("\0\255\1"):rep(1000))
      H.write(tmp .. "/half.pem", H.read(sb.cfg.private_key):sub(1, 900))
      H.write(tmp .. "/cfg_bad.lua", "return 42")
      H.write(tmp .. "/cfg_syntax.lua", "return {")
      H.write(tmp .. "/cfg_bad.json", "{ not json")
    end)

    local function cases()
      local c = sb.cfg
      local key_text = H.read(c.private_key)
      local cert_text = H.read(c.platform_cert)
      local pub_text = H.read(c.public_key)
      local body = key_text:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")
      local t = tmp .. "/"
      return {
        -- private_key
        { private_key = "/nonexistent/apiclient_key.pem" }, { private_key = tmp },
        { private_key = t .. "empty.pem" }, { private_key = t .. "binary.pem" },
        { private_key = t .. "garbage.pem" }, { private_key = t .. "half.pem" },
        { private_key = c.merchant_cert }, { private_key = cert_text }, { private_key = c.public_key },
        { private_key = pub_text }, { private_key = pems["ec.pem"] }, { private_key = pems["rsa1024.pem"] },
        { private_key = pems["enc.pem"] }, { private_key = c.private_key .. "\0.bak" },
        { private_key = "" }, { private_key = body }, { private_key = ("x"):rep(1048576) },
        { private_key = "-----BEGIN PRIVATE KEY-----" }, { private_key = false },
        { private_key = 42 }, { private_key = { c.private_key } }, { private_key = true },
        -- platform certificates
        { platform_certs = {} }, { platform_certs = { "/nonexistent.pem" } }, { platform_certs = { tmp } },
        { platform_certs = { t .. "garbage.pem" } }, { platform_certs = { c.private_key } },
        { platform_certs = { key_text } }, { platform_certs = { c.public_key } },
        { platform_certs = { pub_text } }, { platform_certs = { c.platform_cert, t .. "garbage.pem" } },
        { platform_certs = { 1 } }, { platform_certs = { true } }, { platform_certs = t .. "garbage.pem" },
        { platform_certs = { cert_text:sub(1, 200) } }, { platform_certs = false },
        -- public key mode
        { platform_certs = false, public_key = c.platform_cert, public_key_id = c.public_key_id },
        { platform_certs = false, public_key = cert_text, public_key_id = c.public_key_id },
        { platform_certs = false, public_key = c.private_key, public_key_id = c.public_key_id },
        { platform_certs = false, public_key = pems["ec_pub.pem"], public_key_id = c.public_key_id },
        { platform_certs = false, public_key = t .. "garbage.pem", public_key_id = c.public_key_id },
        { platform_certs = false, public_key = c.public_key },
        { platform_certs = false, public_key_id = c.public_key_id },
        { platform_certs = false, public_key = c.public_key, public_key_id = "KEY_1" },
        { platform_certs = false, public_key = c.public_key, public_key_id = 1 },
        -- apiv3_key
        { apiv3_key = "" }, { apiv3_key = ("k"):rep(31) }, { apiv3_key = ("k"):rep(33) },
        { apiv3_key = ("k"):rep(64) }, { apiv3_key = 12345678901234567890 }, { apiv3_key = {} },
        { platform_certs = false, apiv3_key = ("k"):rep(16) },
        -- base_url and backup_urls
        { base_url = "http://localhost" }, { base_url = "http://" .. c.base_url:sub(9) },
        { base_url = "ftp://localhost" }, { base_url = "localhost" }, { base_url = "" },
        { base_url = "https://" }, { base_url = "https://a b" }, { base_url = "https://host/path" },
        { base_url = "https://host:0" }, { base_url = "https://host:65536" }, { base_url = "https://host:" },
        { base_url = "https://host:99999999999999999999" }, { base_url = "https://user@host" },
        { base_url = "https://host?x=1" }, { base_url = "https://host#x" },
        { base_url = "https://host\r\nX: y" }, { base_url = "https://host\0" }, { base_url = 443 },
        { backup_urls = { "http://x" } }, { backup_urls = { 1 } }, { backup_urls = "https://x" },
        { backup_urls = { c.base_url, "https://x:0" } },
        -- time limits and sizes
        { timeout_ms = -1 }, { timeout_ms = 0 }, { timeout_ms = 0 / 0 }, { timeout_ms = math.huge },
        { timeout_ms = -math.huge }, { timeout_ms = 1.5 }, { timeout_ms = 2 ^ 40 }, { timeout_ms = "1000" },
        { connect_timeout_ms = -5 }, { connect_timeout_ms = 0 }, { connect_timeout_ms = 0 / 0 },
        { connect_timeout_ms = "3000" }, { max_body_bytes = 0 }, { max_body_bytes = -1 },
        { max_body_bytes = 0 / 0 },
        -- unknown options and wrong types
        { foo = 1 }, { [1] = "x" }, { Mchid = "1900000109" }, { timeout = 1000 }, { [true] = 1 },
        { mchid = 1900000109.5 }, { mchid = "" }, { mchid = "abc" }, { mchid = "1 2" }, { mchid = ("1"):rep(33) },
        { serial_no = 123 }, { serial_no = "" }, { serial_no = "xyz" }, { serial_no = ("A"):rep(65) },
        { serial_no = c.serial_no .. "\r\nX: y" }, { serial_no = false },
        { logger = "print" }, { logger = {} }, { transport = 1 }, { transport = "bogus" }, { transport = true },
        { user_agent = 1 }, { user_agent = "a\r\nX-Injected: 1" }, { user_agent = ("u"):rep(201) },
        { ca_file = 1 }, { ca_file = "/nonexistent/ca.pem" }, { ca_file = tmp }, { ca_file = t .. "binary.pem" },
        { ca_file = c.ca_file .. "\0x" },
        -- modes
        { sp_mchid = c.sp_mchid }, { mchid = false }, { sub_mchid = c.sub_mchid },
        { mchid = false, sp_mchid = c.sp_mchid, sub_mchid = "abc" },
        { mchid = false, sp_mchid = "x", sub_mchid = c.sub_mchid },
        { mchid = false, sp_mchid = c.sp_mchid, sub_mchid = -1900000101 },
      }
    end

    it("bad options (>= 100) -> nil, CONFIG_ERROR; nothing reaches the sandbox", function()
      local list = cases()
      assert.is_true(#list >= 100, #list)
      nothing_sent(function()
        for i, over in ipairs(list) do
          local o = sb:options()
          for k, v in pairs(over) do
            if v == false then o[k] = nil else o[k] = v end
          end
          local okp, c, err = pcall(wxpay.new, o)
          local label = ("case %d (%s)"):format(i, next(over) and tostring(next(over)) or "?")
          assert.is_true(okp, label .. " raised: " .. tostring(c))
          assert.is_nil(c, label .. " was accepted")
          assert.is_true(errors.is(err), label)
          assert.equal(errors.CONFIG_ERROR, err.code, label .. ": " .. tostring(err))
          assert.is_string(err.message)
          assert.is_true(#tostring(err) < 2000, label .. " message too long")
        end
      end)
    end)

    it("config file paths that are unusable -> CONFIG_ERROR", function()
      nothing_sent(function()
        for _, p in ipairs { "/nonexistent/wxpay.lua", tmp, tmp .. "/cfg_bad.lua", tmp .. "/cfg_syntax.lua",
          tmp .. "/cfg_bad.json", tmp .. "/binary.pem", "", tmp .. "/cfg_bad.lua\0x" } do
          local okp, c, err = pcall(wxpay.new, p)
          assert.is_true(okp, show(p) .. " raised: " .. tostring(c))
          assert.is_nil(c)
          assert.equal(errors.CONFIG_ERROR, err.code, show(p))
        end
      end)
    end)

    it("only a non-table, non-string argument raises", function()
      for _, v in ipairs { 0, 1.5, true, false, print, coroutine.create(print), io.stdout } do
        raises(function() return wxpay.new(v) end, "wxpay.new(" .. type(v) .. ")")
      end
      raises(function() return wxpay.new() end, "wxpay.new()")
      raises(function() return wxpay.new(nil) end, "wxpay.new(nil)")
    end)

    it("a good configuration still works after all that (the counter can move)", function()
      local c = sb:client()
      local o = sb:order { out_trade_no = H.order_no("H") }
      local r0 = counters()
      assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
      assert.equal(r0 + 1, (counters()))
      c:close()
    end)
  end)

  describe("a closed client", function()
    it("raises on every call and sends nothing", function()
      local c = sb:client()
      c:close()
      c:close() -- twice is fine
      nothing_sent(function()
        for _, what in ipairs(CALLS) do
          raises(function() c[what](c, { out_trade_no = "OK123" }) end, what .. " after close")
        end
        raises(function() c:request { method = "GET", path = "/v3/global/certificates" } end, "request after close")
        raises(function() c:certificates() end, "certificates after close")
      end)
      assert.is_string(tostring(c))
    end)
  end)
end)
