-- No error, log line, tostring or warning ever contains key material: every
-- text the library produces, in success and in every kind of failure, is
-- scanned for fragments of the private key's base64 body and of the APIv3 key.
-- And the warning about a key file that group/others can read.
local wxpay = require "wxpay"
local H = require "helpers"

local sb, tmp
local key_frags, v3_frags = {}, {}
local seen = {}      -- every text gathered, with where it came from

-- the interpreter for our Lua children (make test-asan points it at its ASan build)
local LUA = os.getenv("WXPAY_TEST_LUA") or (rawget(_G, "jit") and "luajit" or "lua5.4")

-- Every string reachable from v (tables walked, cycles cut).
local function dump(v, out, visited)
  out, visited = out or {}, visited or {}
  local t = type(v)
  if t == "table" then
    if visited[v] then return out end
    visited[v] = true
    local okm, s = pcall(tostring, v)
    if okm then out[#out + 1] = s end
    for k, x in pairs(v) do
      dump(k, out, visited)
      dump(x, out, visited)
    end
  else
    local okm, s = pcall(tostring, v)
    out[#out + 1] = okm and s or "?"
  end
  return out
end

local function gather(where, ...)
  for i = 1, select("#", ...) do
    for _, s in ipairs(dump((select(i, ...)))) do
      seen[#seen + 1] = { where = where, text = s }
    end
  end
end

-- A logger that keeps every line (level, message and fields, walked).
local function logger(tag)
  return function(level, message, fields)
    gather(tag .. " log", level, message, fields)
  end
end

-- A failure: the error object, its message, tostring and concatenation.
local function gather_err(where, err)
  if err == nil then return end
  gather(where, err, tostring(err), type(err) == "table" and ("" .. err) or "", err.message)
end

local function leaks(text)
  for _, f in ipairs(key_frags) do
    if text:find(f, 1, true) then return "private key fragment " .. f end
  end
  for _, f in ipairs(v3_frags) do
    if text:find(f, 1, true) then return "apiv3_key fragment" end
  end
end

local function scan_all(want_logs)
  assert.is_true(#seen > 0)
  if want_logs then
    local n = 0
    for _, e in ipairs(seen) do if e.where:find(" log", 1, true) then n = n + 1 end end
    assert.is_true(n > 0, "the logger saw nothing")
  end
  for _, e in ipairs(seen) do
    local why = leaks(e.text)
    assert.is_nil(why, ("%s leaked (%s): %s"):format(e.where, tostring(why), e.text:sub(1, 200)))
  end
end

local function windows(s, n)
  local out = {}
  for i = 1, #s - n + 1 do out[#out + 1] = s:sub(i, i + n - 1) end
  return out
end

local function client(over, mode, tag)
  local o = sb:options(over, mode)
  o.logger = logger(tag or "client")
  local c, err = wxpay.new(o)
  gather_err("wxpay.new " .. (tag or ""), err)
  assert.truthy(c, err and tostring(err))
  gather("tostring(client)", tostring(c))
  return c
end

-- Runs lua code in a child interpreter; returns its stderr (stdout dropped).
local function child_stderr(code)
  local f = tmp .. "/child.lua"
  H.write(f, code)
  local cmd = ("LUA_PATH=%q LUA_CPATH=%q %s %s 2>&1 >/dev/null"):format(package.path, package.cpath, LUA, f)
  local out = H.sh(cmd)
  return out
end

describe("secrets", function()
  setup(function()
    sb = H.sandbox("secrets")
    key_frags = H.key_fragments(sb.cfg.private_key)
    v3_frags = windows(sb.cfg.apiv3_key, 12)
    assert.is_true(#key_frags > 50)
    tmp = os.tmpname()
    os.remove(tmp)
    assert(os.execute("mkdir -p " .. tmp))
  end)
  teardown(function()
    H.sh("rm -rf " .. tmp)
    sb:stop()
  end)
  before_each(function() seen = {} end)

  it("the scanner finds what it looks for (positive control)", function()
    assert.truthy(leaks(H.read(sb.cfg.private_key)))
    assert.truthy(leaks("x" .. sb.cfg.apiv3_key .. "x"))
    assert.is_nil(leaks(tostring(wxpay.errors.info("SYSTEM_ERROR"))))
  end)

  it("successful calls, both modes, certificates downloaded with the APIv3 key", function()
    for _, mode in ipairs { "common", "institutional" } do
      local c = client({ apiv3_key = sb.cfg.apiv3_key }, mode, mode)
      local o = sb:order(mode == "common" and { out_trade_no = H.order_no("S") }
        or { out_trade_no = H.order_no("S"), sp_mchid = sb.cfg.sp_mchid, sub_mchid = sb.cfg.sub_mchid })
      gather("revoke", c:revoke { out_trade_no = o.out_trade_no })
      gather("query", c:query { out_trade_no = o.out_trade_no })
      gather("cancel", c:cancel { out_trade_no = o.out_trade_no })
      gather("request", c:request { method = "GET", path = "/v3/global/certificates" })
      gather("certificates", c:certificates())
      gather("client fields", c)
      c:close()
      gather("closed client", tostring(c))
    end
    -- only the APIv3 key: the first call downloads
    local c = client({ platform_certs = false, apiv3_key = sb.cfg.apiv3_key }, nil, "v3only")
    local o = sb:order { out_trade_no = H.order_no("S") }
    gather("revoke v3only", c:revoke { out_trade_no = o.out_trade_no })
    c:close()
    scan_all(true)
  end)

  it("every kind of failed answer", function()
    local c = client({ timeout_ms = 600, apiv3_key = sb.cfg.apiv3_key }, nil, "faults")
    local faults = {
      { fault = "flip_signature" }, { fault = "unknown_serial" }, { fault = "missing_signature" },
      { fault = "bad_base64_signature" }, { fault = "stale_timestamp" }, { fault = "unsigned_error" },
      { fault = "status", status = 401, code = "SIGN_ERROR" }, { fault = "status", status = 500 },
      { fault = "truncate" }, { fault = "oversized" }, { fault = "non_json" }, { fault = "drop" },
      { fault = "delay", ms = 1200 },
    }
    for _, f in ipairs(faults) do
      local o = sb:order { out_trade_no = H.order_no("F") }
      f.match, f.count = o.out_trade_no, 100
      sb:fault(f)
      local _, e1 = c:revoke { out_trade_no = o.out_trade_no }
      local _, e2 = c:query { out_trade_no = o.out_trade_no }
      local _, e3 = c:cancel { out_trade_no = o.out_trade_no, deadline_ms = 300 }
      gather_err(f.fault .. " revoke", e1)
      gather_err(f.fault .. " query", e2)
      gather_err(f.fault .. " cancel", e3)
      assert.truthy(e1 and e2 and e3, f.fault)
    end
    sb:control("DELETE", "/faults")
    -- a request the sandbox refuses (the answer echoes our string to sign)
    local r, e = c:request { method = "POST", path = "/v3/global/micropay/transactions/id/1/reverse", body = "{}" }
    gather("request refused", r)
    gather_err("request refused", e)
    c:close()
    -- TLS and connection failures
    for _, over in ipairs { { ca_file = sb.cfg.merchant_cert }, { base_url = "https://127.0.0.1:1" } } do
      local bad = client(over, nil, "transport")
      local _, err = bad:revoke { out_trade_no = "S1" }
      gather_err("transport", err)
      bad:close()
    end
    scan_all(true)
  end)

  it("a certificate download that does not decrypt (wrong APIv3 key)", function()
    local other = ("Z"):rep(32)
    sb:control("POST", "/apiv3_key", { key = other })
    local c = client({ platform_certs = false, apiv3_key = sb.cfg.apiv3_key }, nil, "download")
    local _, err = c:revoke { out_trade_no = "S1" }
    gather_err("download", err)
    assert.truthy(err)
    local _, err2 = c:certificates()
    gather_err("certificates", err2)
    c:close()
    sb:control("POST", "/apiv3_key", '{"key": null}')
    sb:reset()
    scan_all()
  end)

  it("key material put in the wrong options never comes back in CONFIG_ERROR", function()
    local c = sb.cfg
    local key_text = H.read(c.private_key)
    local body = key_text:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")
    local v3 = c.apiv3_key
    local values = { key_text, body, body:sub(1, 200), key_text:gsub("PRIVATE KEY", "PRIVAT KEY"),
      key_text:sub(1, 900), "-----BEGIN CERTIFICATE-----\n" .. body .. "\n-----END CERTIFICATE-----\n",
      "-----BEGIN PUBLIC KEY-----\n" .. body .. "\n-----END PUBLIC KEY-----\n", v3, v3 .. v3, v3 .. "\n",
      key_text .. "\0", body .. "\r\n" }
    -- options that hold keys or name key files get every value; the others
    -- may echo a short printable value (a bad base_url is worth showing), so
    -- they get the long ones (whole PEM, base64 body) and the APIv3 key mangled.
    local KEYISH = { private_key = true, public_key = true, apiv3_key = true, ca_file = true }
    local names = { "mchid", "sp_mchid", "sub_mchid", "serial_no", "private_key", "public_key",
      "public_key_id", "apiv3_key", "base_url", "ca_file", "user_agent", "transport" }
    local n = 0
    for _, name in ipairs(names) do
      for _, v in ipairs(values) do
        if not KEYISH[name] and v == v3 then v = v3 .. v3 end
        local o = sb:options()
        o[name] = v
        if name == "public_key" then o.public_key_id = c.public_key_id end
        if name == "sub_mchid" or name == "sp_mchid" then o.mchid, o.sp_mchid = nil, c.sp_mchid end
        o.logger = logger("config " .. name)
        local okp, cl, err = pcall(wxpay.new, o)
        -- an accepted value (a key chunk is printable text, a valid user_agent) is the
        -- caller's own choice: only what the library says about it is scanned
        gather("config " .. name, okp, cl and tostring(cl), err)
        if err then gather_err("config " .. name, err) end
        if cl and cl.close then cl:close() end
        n = n + 1
      end
    end
    for _, v in ipairs(values) do
      gather_err("platform_certs", select(2, wxpay.new(sb:options { platform_certs = { v } })))
      gather_err("backup_urls", select(2, wxpay.new(sb:options { backup_urls = { v == v3 and v3 .. v3 or v } })))
      n = n + 2
    end
    assert.is_true(n >= 100)
    -- config files with the key inline and a syntax error
    local lua_cfg = tmp .. "/broken.lua"
    H.write(lua_cfg, ("return { mchid = %q, private_key = %q"):format(c.mchid, key_text):gsub("\\\n", "\\n"))
    local _, e1 = wxpay.new(lua_cfg)
    gather_err("lua config", e1)
    H.write(lua_cfg, "return { private_key = \"" .. key_text:gsub("\n", "\\n"))
    local _, e2 = wxpay.new(lua_cfg)
    gather_err("lua config (unfinished string)", e2)
    local json_cfg = tmp .. "/broken.json"
    H.write(json_cfg, ('{"mchid": "%s", "private_key": "%s", "apiv3_key": "%s",'):format(c.mchid,
      key_text:gsub("\n", "\\n"), v3))
    local _, e3 = wxpay.new(json_cfg)
    gather_err("json config", e3)
    H.write(json_cfg, ('{"mchid": "%s", "private_key": "%s", "apiv3_key": "%s", "foo": 1}'):format(c.mchid,
      key_text:gsub("\n", "\\n"), v3))
    local _, e4 = wxpay.new(json_cfg)
    gather_err("json config (unknown option)", e4)
    assert.truthy(e1 and e2 and e3 and e4)
    -- raised programming errors
    local cl = client(nil, nil, "raise")
    for _, args in ipairs { { out_trade_no = { key_text } }, { transaction_id = true, out_trade_no = body },
      { [body] = 1 }, { out_trade_no = "S1", sub_mchid = { v3 } } } do
      local okp, msg = pcall(cl.revoke, cl, args)
      assert.is_false(okp)
      gather("raise", msg)
    end
    cl:close()
    scan_all()
  end)

  describe("a private key file readable by group/others", function()
    local function copy_key(name, mode)
      local p = tmp .. "/" .. name
      H.write(p, H.read(sb.cfg.private_key))
      assert(os.execute(("chmod %s %s"):format(mode, p)))
      return p
    end

    it("is reported to the logger with level warn (644, 640, 604); 600 and 400 are quiet", function()
      for mode, loud in pairs { ["644"] = true, ["640"] = true, ["604"] = true, ["600"] = false, ["400"] = false } do
        local p = copy_key("key" .. mode .. ".pem", mode)
        local lines = {}
        local c = assert(wxpay.new(sb:options { private_key = p,
          logger = function(level, msg, fields) lines[#lines + 1] = { level, msg, fields } end }))
        c:close()
        local warned = false
        for _, l in ipairs(lines) do
          gather("key mode log", l)
          if l[1] == "warn" and l[2]:find("group/others", 1, true) then
            warned = true
            assert.truthy(l[2]:find(p, 1, true), "the warning names the file")
          end
        end
        assert.equal(loud, warned, "mode " .. mode)
      end
      scan_all()
    end)

    it("goes to stderr without a logger (644 warns, 600 does not)", function()
      local function run(mode)
        local p = copy_key("child" .. mode .. ".pem", mode)
        local o = sb:options { private_key = p }
        local code = ("local w = require 'wxpay'\nlocal c = assert(w.new{ mchid = %q, serial_no = %q, "
          .. "private_key = %q, platform_certs = { %q }, base_url = %q, ca_file = %q })\nc:close()\n")
          :format(o.mchid, o.serial_no, o.private_key, o.platform_certs[1], o.base_url, o.ca_file)
        return child_stderr(code)
      end
      local loud, quiet = run("644"), run("600")
      gather("stderr", loud, quiet)
      assert.truthy(loud:find("wxpay: warning: ", 1, true), loud)
      assert.truthy(loud:find("group/others", 1, true), loud)
      assert.equal("", quiet)
      scan_all()
    end)
  end)
end)
