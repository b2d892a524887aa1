-- Issue 13 §3 and §4: hostile text stays harmless on the terminal, and the
-- smaller defects (key-file argument echo, bytecode config files, proxy,
-- permission warnings, percent-encoding).  Child processes run with a clean
-- environment (`env -i`) so that what they see is what the test gives them.
local wxpay = require "wxpay"
local H = require "helpers"

local errors = wxpay.errors
local root = H.root
local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
local PATH = os.getenv("PATH") or "/usr/bin:/bin"
local sb, tmp

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- Runs `argv` (a list) in `root` with only PATH, HOME and `env`; returns {out, err, rc}.
local function run(argv, env)
  local parts = { "cd", q(root), "&&", "env", "-i", "PATH=" .. q(PATH), "HOME=" .. q(tmp) }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
  local errf = tmp .. "/stderr"
  local out, _, rc = H.sh(table.concat(parts, " ") .. " 2>" .. q(errf) .. " </dev/null")
  return { out = out, err = H.read(errf) or "", rc = rc }
end

--- Runs a Lua snippet in a child interpreter with the checkout's paths.
local function lua_child(code, env)
  local build = rawget(_G, "jit") and "build/luajit" or "build/5.4"
  local prelude = ("package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path; "
    .. "package.cpath = './%s/?.so;' .. package.cpath; "):format(build)
  return run({ LUA, "-e", prelude .. code }, env)
end

local function no_raw_controls(s, what)
  local at = s:find("[%z\1-\9\11-\31\127]") or s:find("\194[\128-\159]")
  assert(not at, what .. " holds a raw control byte at " .. tostring(at) .. ": " .. s)
end

setup(function()
  sb = H.sandbox("hardening")
  tmp = os.tmpname()
  os.remove(tmp)
  assert(H.sh("mkdir -p " .. q(tmp)))
end)
teardown(function()
  sb:stop()
  H.sh("rm -rf " .. q(tmp))
end)
before_each(function() sb:control("DELETE", "/faults") end)

local function new_order(prefix, fields)
  local f = { out_trade_no = H.order_no(prefix or "H"), trade_state = "SUCCESS" }
  for k, v in pairs(fields or {}) do f[k] = v end
  return sb:order(f)
end

-- "wxpay: revoke failed…" then, on the same line after a CR and an
-- erase-line, a fake success that would hide the rest
local NASTY = "boom\r\27[2K\27[1AwxpayRevoke accepted for order X (HTTP 204).\n  state: REVOKED\r\27[2K"

describe("the CLI prints no raw control bytes (13 §3)", function()
  local client_json
  setup(function() client_json = sb.dir .. "/client.json" end)

  it("an unverified error answer's text is escaped and the 'not verified' note stays", function()
    local o = new_order()
    sb:fault { fault = "unsigned_error", status = 400, code = "PARAM_ERROR", message = NASTY,
      match = o.out_trade_no, count = 5 }
    local r = run { LUA, "bin/wxpay", "revoke", "--config", client_json, "--out-trade-no", o.out_trade_no }
    assert.equal(1, r.rc, r.err)
    no_raw_controls(r.out, "stdout")
    no_raw_controls(r.err, "stderr")
    assert.truthy(r.err:find("boom\\x0d\\x1b[2K\\x1b[1AwxpayRevoke accepted", 1, true), r.err)
    assert.truthy(r.err:find("the answer was not verified: do not trust it", 1, true), r.err)
    -- the fake success never starts a line of its own
    for line in r.err:gmatch("[^\n]+") do assert.is_nil(line:match("^%s*state: REVOKED")) end
  end)

  it("--json and -v output is strict too (stdout and stderr)", function()
    local o = new_order()
    sb:fault { fault = "status", status = 400, code = "PARAM_ERROR", message = NASTY .. "\127\194\155",
      match = o.out_trade_no, count = 5 }
    local r = run { LUA, "bin/wxpay", "query", "--json", "-v", "--config", client_json,
      "--out-trade-no", o.out_trade_no }
    assert.equal(1, r.rc, r.err)
    no_raw_controls(r.out, "stdout")
    no_raw_controls(r.err, "stderr")
    local doc = require("cjson").decode(r.out)
    assert.equal(NASTY .. "\127\194\155", doc.error.message)   -- JSON escapes, the text survives
    assert.truthy(r.out:find("\\u009b", 1, true), r.out)
  end)

  it("tostring(err) uses the same escaping, on one line", function()
    local o = new_order()
    sb:fault { fault = "status", status = 400, code = "PARAM_ERROR", message = NASTY, match = o.out_trade_no }
    local client = sb:client()
    local res, err = client:query { out_trade_no = o.out_trade_no }
    client:close()
    assert.is_nil(res)
    local s = tostring(err)
    assert.truthy(s:find("boom\\x0d\\x1b[2K", 1, true), s)
    assert.truthy(s:find("\\x0a  state: REVOKED", 1, true), s)
    assert.is_nil(s:find("%c"))
    assert.equal(errors.escape(NASTY, true), (errors.escape(NASTY, true)))
    assert.equal("a\\x1bb\nc\\x7f\\xc2\\x9b", errors.escape("a\27b\nc\127\194\155", true))
  end)
end)

describe("--apiv3-key-file (13 §4)", function()
  it("never echoes its argument when it is not a readable file", function()
    local o = new_order()
    for _, arg in ipairs { sb.cfg.apiv3_key, "k3y.With/Dots.and-Slash0123456789" } do
      local r = run { LUA, "bin/wxpay", "query", "--config", sb.dir .. "/client.json",
        "--apiv3-key-file", arg, "--out-trade-no", o.out_trade_no }
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("--apiv3-key-file", 1, true), r.err)
      assert.is_nil(r.err:find(arg, 1, true), r.err)
      assert.is_nil(r.out:find(arg, 1, true), r.out)
    end
  end)

  it("warns when the key file is readable by group/others, without its content", function()
    local f = tmp .. "/apiv3.key"
    H.write(f, sb.cfg.apiv3_key .. "\n")
    for _, mode in ipairs { "644", "600" } do
      H.sh("chmod " .. mode .. " " .. q(f))
      local o = new_order()
      local r = run { LUA, "bin/wxpay", "query", "--config", sb.dir .. "/client.json",
        "--apiv3-key-file", f, "--out-trade-no", o.out_trade_no }
      assert.equal(0, r.rc, r.err)
      assert.is_nil((r.out .. r.err):find(sb.cfg.apiv3_key, 1, true))
      local warned = r.err:find("--apiv3-key-file", 1, true) and r.err:find("group/others", 1, true)
      if mode == "644" then assert.truthy(warned, r.err) else assert.falsy(warned, r.err) end
    end
  end)
end)

describe("config files (13 §4)", function()
  it("a precompiled (bytecode) Lua config file is refused on every Lua", function()
    local path = tmp .. "/bytecode.lua"
    local chunk = string.dump(function() return { mchid = "1900000109" } end)
    H.write(path, chunk)
    local cfg, err = wxpay.load_config(path)
    assert.is_nil(cfg)
    assert.matches("precompiled", err)
    local client, cerr = wxpay.new(path)
    assert.is_nil(client)
    assert.equal(errors.CONFIG_ERROR, cerr.code)
  end)

  it("a config file holding apiv3_key or an inline key warns when group/others can read it", function()
    local key_pem = assert(H.read(sb.cfg.private_key))
    local cases = {
      { name = "apiv3.json", text = ('{"mchid":"1900000109","apiv3_key":"%s"}'):format(sb.cfg.apiv3_key) },
      { name = "inline.lua", text = ("return { mchid = '1900000109', private_key = [[%s]] }"):format(key_pem) },
    }
    local frags = H.key_fragments(sb.cfg.private_key)
    for _, c in ipairs(cases) do
      local path = tmp .. "/" .. c.name
      H.write(path, c.text)
      for _, mode in ipairs { "640", "600" } do
        H.sh("chmod " .. mode .. " " .. q(path))
        local r = lua_child(("local c = assert(require('wxpay').load_config(%q)); io.write(c.mchid)"):format(path))
        assert.equal(0, r.rc, r.err)
        assert.equal("1900000109", r.out)
        local warned = r.err:find("readable by group/others", 1, true)
        if mode == "640" then assert.truthy(warned, c.name .. ": " .. r.err) else assert.falsy(warned, r.err) end
        assert.is_nil(r.err:find(sb.cfg.apiv3_key, 1, true))
        for _, fr in ipairs(frags) do assert.is_nil(r.err:find(fr, 1, true)) end
      end
    end
  end)

  it("a Lua config file's own logger receives the warning", function()
    local path = tmp .. "/logger.lua"
    -- the file runs with no globals: its logger keeps what it gets in a table the file returns
    H.write(path, ("local seen = {}\nreturn { mchid = '1900000109', apiv3_key = %q, seen = seen, "
      .. "logger = function(level, msg) seen[#seen + 1] = level .. ' ' .. msg end }"):format(sb.cfg.apiv3_key))
    H.sh("chmod 644 " .. q(path))
    local r = lua_child(("local c = assert(require('wxpay').load_config(%q)); io.write(table.concat(c.seen, '|'))")
      :format(path))
    assert.equal(0, r.rc, r.err)
    assert.matches("^warn config file .*readable by group/others", r.out)
    assert.is_nil(r.out:find(sb.cfg.apiv3_key, 1, true))
    assert.equal("", r.err)
  end)
end)

describe("the private key file (13 §4)", function()
  it("a private_key path is read and parsed in C (core.load_private_key_file), never as a Lua string", function()
    local core = require "wxpay.core"
    local from_file, from_pem = 0, 0
    local real_file, real_pem = core.load_private_key_file, core.load_private_key
    core.load_private_key_file = function(...) from_file = from_file + 1 return real_file(...) end
    core.load_private_key = function(...) from_pem = from_pem + 1 return real_pem(...) end
    local ok, c = pcall(wxpay.new, sb:options())
    core.load_private_key_file, core.load_private_key = real_file, real_pem
    assert.is_true(ok, tostring(c))
    assert.truthy(c)
    c:close()
    assert.equal(1, from_file)
    assert.equal(0, from_pem)
  end)

  it("a file that holds no key is a CONFIG_ERROR without its content", function()
    local path = tmp .. "/not-a-key.pem"
    H.write(path, "-----BEGIN PRIVATE KEY-----\nTUFOWVNFQ1JFVEJZVEVT\n-----END PRIVATE KEY-----\n")
    H.sh("chmod 600 " .. q(path))
    local c, err = wxpay.new(sb:options { private_key = path })
    assert.is_nil(c)
    assert.equal(errors.CONFIG_ERROR, err.code)
    assert.is_nil(tostring(err):find("TUFOWVNFQ1JFVEJZVEVT", 1, true))
    local missing, merr = wxpay.new(sb:options { private_key = "TUFOWVNFQ1JFVEJZVEVTYWJjZGVm" })
    assert.is_nil(missing)
    assert.is_nil(tostring(merr):find("TUFOWVNFQ1JFVEJZVEVTYWJjZGVm", 1, true))
  end)
end)

describe("the proxy option (13 §4)", function()
  it("is validated", function()
    local bad = { "ftp://127.0.0.1:3128", "127.0.0.1:3128", "http://", "http://a b", "http://x\r\n", 42, true }
    for _, p in ipairs(bad) do
      local c, err = wxpay.new(sb:options { proxy = p })
      assert.is_nil(c, tostring(p))
      assert.equal(errors.CONFIG_ERROR, err.code)
    end
    for _, p in ipairs { "env", "http://127.0.0.1:3128", "https://proxy.example:8443",
      "socks5://127.0.0.1:1080", "http://user:pw@127.0.0.1:3128/" } do
      local c = assert(wxpay.new(sb:options { proxy = p }))
      c:close()
    end
  end)

  describe("environment proxies", function()
    local listener, port, log
    setup(function()
      listener = H.recording_listener(tmp)
      port, log = listener.port, listener.log
    end)
    teardown(function() if listener then listener.stop() end end)

    local function query_in_child(proxy_opt, env)
      local o = new_order("P")
      local code = ([[
local wxpay = require "wxpay"
local opts = assert(wxpay.load_config(%q))
opts.proxy = %s
opts.timeout_ms = 3000
local c = assert(wxpay.new(opts))
local order, err = c:query { out_trade_no = %q }
io.write(order and ("OK " .. order.trade_state) or ("ERR " .. err.code))
]]):format(sb.dir .. "/client.json", proxy_opt and ("%q"):format(proxy_opt) or "nil", o.out_trade_no)
      return lua_child(code, env)
    end

    local function connections()
      local text = H.read(log) or ""
      local n = 0
      for _ in text:gmatch("[^\n]+") do n = n + 1 end
      return n, text
    end

    it("HTTPS_PROXY and ALL_PROXY are ignored without proxy = \"env\"", function()
      local before = connections()
      local url = "http://127.0.0.1:" .. port
      local r = query_in_child(nil, { HTTPS_PROXY = url, https_proxy = url, ALL_PROXY = url })
      assert.equal("OK SUCCESS", r.out, r.err)
      assert.equal(before, (connections()))
    end)

    it("proxy = \"env\" uses them, and a proxy URL is used as given", function()
      local url = "http://127.0.0.1:" .. port
      local before = connections()
      local r = query_in_child("env", { HTTPS_PROXY = url, https_proxy = url })
      assert.matches("^ERR ", r.out)   -- the listener is no proxy: it hangs up
      local n, text = connections()
      assert.truthy(n > before, "no connection reached the listener")  -- libcurl may try twice
      assert.matches("CONNECT localhost:%d+ HTTP", text)
      r = query_in_child(url, {})
      assert.matches("^ERR ", r.out)
      assert.truthy(connections() > n, "the configured proxy was not used")
    end)
  end)
end)

describe("percent-encoding (13 §4)", function()
  local util = require "wxpay.util"
  it("encodes every byte outside RFC 3986's unreserved set, as wechatpay-php does", function()
    assert.equal("F%7Cx%2Ay%40z", util.encode_segment("F|x*y@z"))
    assert.equal("aZ09-._~%21%24%26%27%28%29%2B%2C%3B%3D%3A%2F%3F%23%5B%5D%20%25",
      util.encode_segment("aZ09-._~!$&'()+,;=:/?#[] %"))
    assert.equal("%C3%A9%00", util.urlencode("\195\169\0"))
  end)

  it("the sandbox verifies and decodes such ids (revoke and query)", function()
    local client = sb:client()
    local id = "F|x*y@" .. H.order_no("z")
    local o = sb:order { out_trade_no = id, trade_state = "SUCCESS" }
    local order = assert(client:query { out_trade_no = o.out_trade_no })
    assert.equal(id, order.out_trade_no)
    assert.is_true((client:revoke { out_trade_no = id }))
    client:close()
    local seen = 0
    for _, r in ipairs(sb:requests()) do
      if r.target:find("F%7Cx%2Ay%40z", 1, true) then seen = seen + 1 end
    end
    assert.equal(2, seen)
  end)
end)
