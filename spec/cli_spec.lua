-- The `wxpay` command (bin/wxpay, lua/wxpay/cli.lua) run as a subprocess
-- (`lua5.4 bin/wxpay`, the same under lua5.4 and luajit busted) against one sandbox.
local helpers = require "helpers"
local cjson = require "cjson"

local root = helpers.root
local PATH = os.getenv("PATH") or "/usr/bin:/bin"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. "; echo \"::rc=$?\"", "r"))
  local out = p:read("*a")
  p:close()
  local text, rc = out:match("^(.*)::rc=(%d+)\n?$")
  return text, tonumber(rc)
end

describe("wxpay command", function()
  local sb, cfg, tmp, home, secrets
  local seen = 0

  -- Every output of every run: no private key fragment, no APIv3 key.
  local function check_secrets(text)
    for _, s in ipairs(secrets) do
      if text:find(s, 1, true) then
        error("output leaks key material (" .. s:sub(1, 4) .. "...):\n" .. text, 2)
      end
    end
    seen = seen + 1
  end

  --- Runs a command line; returns { out =, err =, rc = }.
  -- opts: env (table), cwd, lua (interpreter), program, stdin (file), raw (command).
  local function run(args, env, opts)
    opts = opts or {}
    local parts = { "cd", q(opts.cwd or root), "&&", "env", "-i", "PATH=" .. q(PATH),
      "HOME=" .. q(opts.home or home) }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
    parts[#parts + 1] = opts.lua or "lua5.4"
    if opts.program ~= false then parts[#parts + 1] = q(opts.program or "bin/wxpay") end
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    local errf = tmp .. "/stderr"
    local cmd = table.concat(parts, " ") .. " 2>" .. q(errf) .. " <" .. q(opts.stdin or "/dev/null")
    local out, rc = sh(cmd)
    local err = helpers.read(errf) or ""
    check_secrets(out .. err)
    return { out = out, err = err, rc = rc }
  end

  local function json(r)
    local ok, v = pcall(cjson.decode, r.out)
    assert(ok and type(v) == "table", "stdout is not one JSON object: " .. r.out .. "\nstderr: " .. r.err)
    return v
  end

  -- The sandbox's configuration as environment variables.
  local function env(over)
    local e = {
      WXPAY_MCHID = cfg.mchid, WXPAY_SERIAL_NO = cfg.serial_no, WXPAY_PRIVATE_KEY = cfg.private_key,
      WXPAY_PLATFORM_CERT = cfg.platform_cert, WXPAY_BASE_URL = cfg.base_url, WXPAY_CA_FILE = cfg.ca_file,
    }
    for k, v in pairs(over or {}) do
      if v == false then e[k] = nil else e[k] = v end
    end
    return e
  end

  local function seed(state, extra)
    local no = helpers.order_no("CLI")
    local o = { out_trade_no = no, trade_state = state }
    for k, v in pairs(extra or {}) do o[k] = v end
    return no, sb:order(o)
  end

  local DEAD_URL = "https://127.0.0.1:1"

  setup(function()
    sb = helpers.sandbox("cli")
    cfg = sb.cfg
    secrets = helpers.key_fragments(cfg.private_key)
    secrets[#secrets + 1] = cfg.apiv3_key
    local out = sh("mktemp -d \"${TMPDIR:-/tmp}/wxpay-cli-spec.XXXXXX\"")
    tmp = out:gsub("%s+$", "")
    home = tmp .. "/home"
    assert(select(2, sh("mkdir -p " .. q(home) .. " " .. q(tmp .. "/sbtmp"))) == 0)
  end)

  teardown(function()
    if sb then sb:stop() end
    if tmp and tmp:find("wxpay-cli-spec", 1, true) then sh("rm -rf -- " .. q(tmp)) end
  end)

  describe("help and version", function()
    it("--help prints the usage with every command, exit 0", function()
      local r = run { "--help" }
      assert.equal(0, r.rc)
      assert.matches("Usage: wxpay", r.out)
      for _, c in ipairs { "revoke", "query", "cancel", "certificates", "--json", "--sandbox",
        "WXPAY_APIV3_KEY", "--config" } do
        assert.truthy(r.out:find(c, 1, true), c)
      end
      assert.equal("", r.err)
    end)

    it("COMMAND --help and help COMMAND print the command's usage", function()
      for _, c in ipairs { "revoke", "query", "cancel", "certificates", "config" } do
        local r = run { c, "--help" }
        assert.equal(0, r.rc)
        assert.truthy(r.out:find("Usage: wxpay " .. c, 1, true), r.out)
        assert.same(r, run { "help", c })
      end
      assert.truthy(run({ "cancel", "-h" }).out:find("--paid-at", 1, true))
    end)

    it("--version prints the library's version", function()
      local wxpay = require "wxpay"
      local r = run { "--version" }
      assert.equal(0, r.rc)
      assert.truthy(r.out:find("wxpay " .. wxpay._VERSION, 1, true), r.out)
      assert.equal(wxpay._VERSION, json(run { "--version", "--json" }).version)
    end)
  end)

  describe("commands against the sandbox", function()
    it("query: human output and --json", function()
      local no = seed("SUCCESS")
      local r = run({ "query", "--out-trade-no", no }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("SUCCESS", 1, true))
      assert.truthy(r.out:find(no, 1, true))
      local j = json(run({ "--json", "query", "--out-trade-no", no }, env()))
      assert.is_true(j.ok)
      assert.equal("query", j.command)
      assert.equal("SUCCESS", j.trade_state)
      assert.equal(no, j.order.out_trade_no)
      assert.equal("MICROPAY", j.order.trade_type)
    end)

    it("revoke of a paid order: REVOKED, the customer was refunded", function()
      local no = seed("SUCCESS")
      local r = run({ "revoke", "--out-trade-no", no }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("REVOKED", 1, true), r.out)
      assert.truthy(r.out:find("refunded", 1, true), r.out)
      assert.equal("REVOKED", sb:get_order(no).trade_state)
    end)

    it("revoke --json of an unpaid order by transaction id: CLOSED, never charged", function()
      local no, o = seed("NOTPAY")
      local r = run({ "revoke", "--transaction-id", o.transaction_id, "--json" }, env())
      assert.equal(0, r.rc, r.err)
      local j = json(r)
      assert.is_true(j.ok)
      assert.is_true(j.revoked)
      assert.equal("CLOSED", j.trade_state)
      assert.truthy(j.meaning:find("never charged", 1, true))
      assert.equal(no, j.order.out_trade_no)
      assert.equal("CLOSED", sb:get_order(no).trade_state)
      -- the request id of the verified 204 is kept for audits; a good follow-up query is no error
      assert.is_string(j.request_id)
      assert.truthy(#j.request_id > 0)
      assert.is_nil(j.query_error)
    end)

    it("revoke and query print the verified answer's request id", function()
      local no = seed("SUCCESS")
      local r = run({ "revoke", "--out-trade-no", no }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:match("HTTP 204, request id [%w%-]+%)"), r.out)
      r = run({ "query", "--out-trade-no", no }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:match("request id: +[%w%-]+"), r.out)
    end)

    it("cancel retries a SYSTEM_ERROR with one progress line per attempt on stderr", function()
      local no = seed("USERPAYING")
      sb:fault { fault = "status", status = 500, code = "SYSTEM_ERROR", count = 1,
        match = "/out-trade-no/" .. no .. "/reverse" }
      local r = run({ "cancel", "--out-trade-no", no }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("CLOSED", 1, true), r.out)
      local attempts = 0
      for _ in r.err:gmatch("revoke attempt") do attempts = attempts + 1 end
      assert.equal(2, attempts, r.err)
      assert.truthy(r.err:find("SYSTEM_ERROR", 1, true))
      assert.is_nil(r.out:find("wxpay: ", 1, true), r.out)
    end)

    it("cancel --json keeps progress off stdout; --paid-at waits 15 s after the payment", function()
      local monotonic_ms = require("wxpay.core").monotonic_ms
      local no = seed("SUCCESS")
      local t0 = monotonic_ms()
      local r = run({ "--json", "cancel", "--out-trade-no", no, "--paid-at", tostring(os.time() - 13),
        "--deadline-ms", "20000" }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(monotonic_ms() - t0 >= 900)
      local j = json(r)
      assert.is_true(j.ok)
      assert.equal("REVOKED", j.result)
      assert.is_true(j.confirmed)
      assert.equal(1, j.attempts)
      assert.truthy(r.err:find("waiting", 1, true), r.err)
      assert.truthy(r.err:find("revoke attempt", 1, true), r.err)
      assert.equal("REVOKED", sb:get_order(no).trade_state)
    end)

    it("certificates lists serials and validity (configured, then downloaded)", function()
      local r = run({ "certificates" }, env())
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find(cfg.platform_serial, 1, true), r.out)
      assert.truthy(r.out:find("valid", 1, true))
      local j = json(run({ "certificates", "--json" }, env()))
      assert.equal(cfg.platform_serial, j.certificates[1].serial_no)
      assert.equal("config", j.certificates[1].source)
      assert.truthy(j.certificates[1].expire_time)
      -- only the APIv3 key to verify with: downloads first
      j = json(run({ "certificates", "--json" }, env { WXPAY_PLATFORM_CERT = false,
        WXPAY_APIV3_KEY = cfg.apiv3_key }))
      assert.is_true(j.ok)
      assert.equal("download", j.certificates[1].source)
      assert.equal("valid", j.certificates[1].status)
    end)

    it("an unknown order: ORDER_NOT_EXIST, exit 1, with request id and advice", function()
      local wxpay = require "wxpay"
      local r = run({ "revoke", "--out-trade-no", "NO-SUCH-ORDER" }, env())
      assert.equal(1, r.rc)
      assert.equal("", r.out)
      assert.truthy(r.err:find("ORDER_NOT_EXIST", 1, true), r.err)
      assert.truthy(r.err:find(wxpay.errors.info("ORDER_NOT_EXIST").action, 1, true), r.err)
      assert.truthy(r.err:find("request id:", 1, true), r.err)
      r = run({ "query", "--out-trade-no", "NO-SUCH-ORDER", "--json" }, env())
      assert.equal(1, r.rc)
      local j = json(r)
      assert.is_false(j.ok)
      assert.equal(1, j.exit_code)
      assert.equal("ORDER_NOT_EXIST", j.error.code)
      assert.equal(404, j.error.status)
      assert.truthy(j.error.request_id)
      assert.equal(wxpay.errors.info("ORDER_NOT_EXIST").action, j.error.action)
    end)

    it("a network failure: exit 1 with NETWORK_ERROR", function()
      local r = run({ "query", "--out-trade-no", "X1", "--base-url", DEAD_URL }, env())
      assert.equal(1, r.rc)
      assert.truthy(r.err:find("NETWORK_ERROR", 1, true), r.err)
    end)
  end)

  describe("configuration", function()
    local function write_json_config(path, over)
      local c = { mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = cfg.private_key,
        platform_certs = { cfg.platform_cert }, base_url = cfg.base_url, ca_file = cfg.ca_file }
      for k, v in pairs(over or {}) do
        if v == false then c[k] = nil else c[k] = v end
      end
      helpers.write(path, cjson.encode(c))
      return path
    end

    it("the environment overrides the file, flags override the environment", function()
      local file = write_json_config(tmp .. "/dead.json", { base_url = DEAD_URL })
      local no = seed("SUCCESS")
      -- the file alone: its (dead) base_url is used
      local r = run({ "--config", file, "query", "--out-trade-no", no })
      assert.equal(1, r.rc)
      assert.truthy(r.err:find("NETWORK_ERROR", 1, true), r.err)
      -- env beats the file
      r = run({ "--config", file, "query", "--out-trade-no", no }, { WXPAY_BASE_URL = cfg.base_url })
      assert.equal(0, r.rc, r.err)
      local j = json(run({ "--config", file, "config", "--json" }, { WXPAY_BASE_URL = cfg.base_url }))
      assert.equal(cfg.base_url, j.config.base_url.value)
      assert.equal("env WXPAY_BASE_URL", j.config.base_url.source)
      assert.equal("file " .. file, j.config.mchid.source)
      -- a good file loses to a dead env value...
      local good = write_json_config(tmp .. "/good.json")
      r = run({ "--config", good, "query", "--out-trade-no", no }, { WXPAY_BASE_URL = DEAD_URL })
      assert.equal(1, r.rc)
      -- ...which loses to a flag
      r = run({ "--config", good, "--base-url", cfg.base_url, "query", "--out-trade-no", no },
        { WXPAY_BASE_URL = DEAD_URL })
      assert.equal(0, r.rc, r.err)
      j = json(run({ "config", "--json", "--config", good, "--base-url=" .. cfg.base_url },
        { WXPAY_BASE_URL = DEAD_URL }))
      assert.equal("flag --base-url", j.config.base_url.source)
    end)

    it("a Lua config file with paths relative to it; WXPAY_CONFIG and ~/.config/wxpay/config", function()
      local dir = tmp .. "/conf"
      assert.equal(0, select(2, sh(("mkdir -p %s && cp %s %s/key.pem && chmod 600 %s/key.pem && cp %s %s/plat.pem")
        :format(q(dir), q(cfg.private_key), q(dir), q(dir), q(cfg.platform_cert), q(dir)))))
      helpers.write(dir .. "/merchant.lua", ([[
-- merchant configuration
return {
  mchid = %q, serial_no = %q,
  private_key = "key.pem", platform_certs = { "plat.pem" },
  base_url = %q, ca_file = %q,
}
]]):format(cfg.mchid, cfg.serial_no, cfg.base_url, cfg.ca_file))
      local no = seed("NOTPAY")
      local r = run { "--config", dir .. "/merchant.lua", "query", "--out-trade-no", no }
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("NOTPAY", 1, true))
      local j = json(run { "--config", dir .. "/merchant.lua", "config", "--json" })
      assert.equal(dir .. "/key.pem", j.config.private_key.value)
      -- WXPAY_CONFIG names the file
      r = run({ "query", "--out-trade-no", no }, { WXPAY_CONFIG = dir .. "/merchant.lua" })
      assert.equal(0, r.rc, r.err)
      -- the default file, JSON or Lua
      local h2 = tmp .. "/home2"
      assert.equal(0, select(2, sh("mkdir -p " .. q(h2 .. "/.config/wxpay"))))
      write_json_config(h2 .. "/.config/wxpay/config")
      r = run({ "query", "--out-trade-no", no }, nil, { home = h2 })
      assert.equal(0, r.rc, r.err)
      j = json(run({ "config", "--json" }, nil, { home = h2 }))
      assert.equal("file " .. h2 .. "/.config/wxpay/config", j.config.base_url.source)
    end)

    it("no configuration at all: exit 2 with a clear message", function()
      local r = run { "query", "--out-trade-no", "X1" }
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("no configuration found", 1, true), r.err)
      assert.truthy(r.err:find("WXPAY_MCHID", 1, true))
      local j = json(run { "query", "--out-trade-no", "X1", "--json" })
      assert.is_false(j.ok)
      assert.equal(2, j.exit_code)
      assert.equal("CONFIG_ERROR", j.error.code)
    end)

    it("an unusable or unverifiable configuration is refused (CONFIG_ERROR, exit 2)", function()
      local r = run({ "query", "--out-trade-no", "X1" }, { WXPAY_MCHID = cfg.mchid })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("configuration error", 1, true), r.err)
      assert.truthy(r.err:find("serial_no", 1, true), r.err)
      -- nothing to verify answers with
      r = run({ "query", "--out-trade-no", "X1" }, env { WXPAY_PLATFORM_CERT = false })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("no way to verify", 1, true), r.err)
      r = run({ "config" }, env { WXPAY_PLATFORM_CERT = false })
      assert.equal(2, r.rc)
      -- bad values
      r = run({ "query", "--out-trade-no", "X1" }, env { WXPAY_TIMEOUT_MS = "soon" })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("WXPAY_TIMEOUT_MS", 1, true))
      r = run({ "query", "--out-trade-no", "X1", "--base-url", "http://localhost:1" }, env())
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("https", 1, true))
      r = run({ "--config", tmp .. "/missing.json", "query", "--out-trade-no", "X1" })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("missing.json", 1, true))
      helpers.write(tmp .. "/broken.json", "{ not json")
      r = run { "--config", tmp .. "/broken.json", "config" }
      assert.equal(2, r.rc)
    end)

    it("never shows the APIv3 key or private key text", function()
      local keyfile = tmp .. "/apiv3.txt"
      helpers.write(keyfile, cfg.apiv3_key .. "\n")
      local r = run({ "config" }, env { WXPAY_APIV3_KEY = cfg.apiv3_key })
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("(hidden, 32 bytes)", 1, true), r.out)
      r = run({ "config", "--json", "--apiv3-key-file", keyfile }, env { WXPAY_PLATFORM_CERT = false })
      assert.equal(0, r.rc, r.err)
      assert.equal("flag --apiv3-key-file", json(r).config.apiv3_key.source)
      -- a usable client from the key file alone
      r = run({ "certificates", "--apiv3-key-file", keyfile }, env { WXPAY_PLATFORM_CERT = false })
      assert.equal(0, r.rc, r.err)
      -- a wrong key is refused without echoing it
      r = run({ "config" }, env { WXPAY_APIV3_KEY = cfg.apiv3_key .. "x" })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("33", 1, true), r.err)
      -- PEM text instead of a path
      r = run({ "config", "--json" }, env { WXPAY_PRIVATE_KEY = helpers.read(cfg.private_key) })
      assert.equal(0, r.rc, r.err)
      assert.equal("(PEM text)", json(r).config.private_key.value)
      -- a broken inline key: the error names the problem, not the text
      local broken = helpers.read(cfg.private_key):gsub("\n[^\n]+\n%-%-%-%-%-END", "\n-----END")
      r = run({ "query", "--out-trade-no", "X1" }, env { WXPAY_PRIVATE_KEY = broken })
      assert.equal(2, r.rc)
    end)
  end)

  describe("usage errors exit 2", function()
    local cases = {
      { { "--bogus" }, "unknown option --bogus" },
      { { "--bogus=value", "query" }, "unknown option --bogus" },
      { {}, "no command" },
      { { "frobnicate" }, "unknown command" },
      { { "revoke" }, "needs --out-trade-no" },
      { { "query", "--out-trade-no" }, "needs a value" },
      { { "query", "--out-trade-no", "A", "--transaction-id", "1" }, "not both" },
      { { "query", "--out-trade-no", "A", "extra" }, "unexpected argument" },
      { { "certificates", "--out-trade-no", "A" }, "only for" },
      { { "revoke", "--out-trade-no", "A", "--paid-at", "1" }, "only for cancel" },
      { { "cancel", "--out-trade-no", "A", "--paid-at", "yesterday" }, "--paid-at" },
      { { "cancel", "--out-trade-no", "A", "--deadline-ms", "0" }, "--deadline-ms" },
      { { "revoke", "--out-trade-no", "A", "--seed", "SUCCESS" }, "--seed needs --sandbox" },
      { { "--json=yes", "query" }, "takes no value" },
    }
    for _, c in ipairs(cases) do
      it(table.concat(c[1], " "), function()
        local r = run(c[1], env())
        assert.equal(2, r.rc, r.out .. r.err)
        assert.truthy(r.err:find(c[2], 1, true), r.err)
        assert.truthy(r.err:find("--help", 1, true), r.err)
        assert.equal("", r.out)
      end)
    end

    it("invalid order numbers are refused before anything is sent (INVALID_ARGUMENT)", function()
      local before = #sb:requests()
      local r = run({ "revoke", "--out-trade-no", "bad/no" }, env())
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("INVALID_ARGUMENT", 1, true), r.err)
      r = run({ "query", "--transaction-id", "42abc" }, env())
      assert.equal(2, r.rc)
      -- a sub-merchant in common mode
      r = run({ "query", "--out-trade-no", "A", "--sub-mchid", "1900000101" }, env())
      assert.equal(2, r.rc)
      assert.equal(before, #sb:requests())
    end)

    it("--json usage errors are one JSON object on stdout", function()
      local r = run({ "--json", "query" }, env())
      assert.equal(2, r.rc)
      local j = json(r)
      assert.is_false(j.ok)
      assert.equal("USAGE_ERROR", j.error.code)
      assert.equal(2, j.exit_code)
    end)
  end)

  describe("--sandbox", function()
    local sbtmp

    local function leftovers()
      local out = sh("ls -A " .. q(sbtmp) .. "; ps -eo args | grep -F " .. q(sbtmp) .. " | grep -v grep")
      return out
    end

    setup(function() sbtmp = tmp .. "/sbtmp" end)

    it("--seed SUCCESS revoke: REVOKED, sandbox stopped and removed afterwards", function()
      local r = run({ "--sandbox", "--seed", "SUCCESS", "revoke", "--out-trade-no", "SBX1" },
        { TMPDIR = sbtmp })
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("REVOKED", 1, true), r.out)
      assert.truthy(r.err:find("seeded", 1, true))
      assert.equal("", leftovers())
    end)

    it("--json cancel of a seeded USERPAYING order: CLOSED", function()
      local r = run({ "--json", "--sandbox", "--seed", "USERPAYING", "cancel", "--out-trade-no", "SBX2" },
        { TMPDIR = sbtmp })
      assert.equal(0, r.rc, r.err)
      local j = json(r)
      assert.equal("CLOSED", j.result)
      -- nothing seeded: the order does not exist
      r = run({ "--sandbox", "query", "--out-trade-no", "SBX3" }, { TMPDIR = sbtmp })
      assert.equal(1, r.rc)
      assert.truthy(r.err:find("ORDER_NOT_EXIST", 1, true))
      assert.equal("", leftovers())
    end)
  end)

  describe("installed and other interpreters", function()
    it("installed (make install layout): works on package.path, --sandbox is refused", function()
      local p = tmp .. "/prefix"
      local lmod, cmod = p .. "/share/lua/5.4", p .. "/lib/lua/5.4"
      local _, rc = sh(("mkdir -p %s/bin %s/wxpay %s/wxpay && cp -R lua/wxpay/. %s/wxpay/ && "
        .. "cp build/5.4/wxpay/core.so %s/wxpay/ && sed '1s|.*|#!/usr/bin/env lua5.4|' bin/wxpay > %s/bin/wxpay "
        .. "&& chmod 755 %s/bin/wxpay"):format(q(p), q(lmod), q(cmod), q(lmod), q(cmod), q(p), q(p)))
      assert.equal(0, rc)
      local e = env { LUA_PATH = lmod .. "/?.lua;" .. lmod .. "/?/init.lua;;", LUA_CPATH = cmod .. "/?.so;;" }
      local no = seed("SUCCESS")
      local r = run({ "query", "--out-trade-no", no }, e, { lua = p .. "/bin/wxpay", program = false, cwd = tmp })
      assert.equal(0, r.rc, r.err)
      assert.truthy(r.out:find("SUCCESS", 1, true))
      r = run({ "--sandbox", "query", "--out-trade-no", no }, e,
        { lua = p .. "/bin/wxpay", program = false, cwd = tmp })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("source checkout", 1, true), r.err)
      -- without the library on the path: a clear error
      r = run({ "--version" }, nil, { lua = p .. "/bin/wxpay", program = false, cwd = tmp })
      assert.equal(2, r.rc)
      assert.truthy(r.err:find("cannot load", 1, true), r.err)
    end)

    it("luajit bin/wxpay uses the checkout's LuaJIT build", function()
      local no = seed("SUCCESS")
      local r = run({ "--json", "query", "--out-trade-no", no }, env(), { lua = "luajit" })
      assert.equal(0, r.rc, r.err)
      assert.equal("SUCCESS", json(r).trade_state)
    end)
  end)

  describe("REPL", function()
    local function lua_env()
      return { LUA_PATH = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;",
        LUA_CPATH = root .. "/build/5.4/?.so;;" }
    end

    it("lua5.4 -l wxpay sets the global wxpay", function()
      local r = run({ "-l", "wxpay", "-e", "print(type(wxpay), wxpay._VERSION, type(wxpay.new))" },
        lua_env(), { program = false, cwd = tmp })
      assert.equal(0, r.rc, r.err)
      assert.equal("table\t" .. require("wxpay")._VERSION .. "\tfunction\n", r.out)
    end)

    it("prints clients, errors and error advice readably; wxpay.new(\"merchant.json\")", function()
      local dir = tmp .. "/repl"
      assert.equal(0, select(2, sh(("mkdir -p %s && cp %s %s/apiclient_key.pem && chmod 600 %s/apiclient_key.pem "
        .. "&& cp %s %s/wechatpay.pem"):format(q(dir), q(cfg.private_key), q(dir), q(dir),
        q(cfg.platform_cert), q(dir)))))
      helpers.write(dir .. "/merchant.json", cjson.encode {
        mchid = cfg.mchid, serial_no = cfg.serial_no, private_key = "apiclient_key.pem",
        platform_certs = { "wechatpay.pem" }, base_url = cfg.base_url, ca_file = cfg.ca_file })
      helpers.write(dir .. "/session.lua", table.concat({
        'wxpay.errors.info("REVERSE_EXPIRE")',
        'client = wxpay.new("merchant.json")',
        'client',
        'client:query{out_trade_no = "NO-SUCH-REPL"}',
        'select(2, client:query{out_trade_no = "NO-SUCH-REPL"}).code',
      }, "\n") .. "\n")
      local r = run({ "-i", "-l", "wxpay" }, lua_env(), { program = false, cwd = dir, stdin = dir .. "/session.lua" })
      assert.equal(0, r.rc, r.err)
      local text = r.out .. r.err
      assert.truthy(text:find("REVERSE_EXPIRE: The order cannot be canceled. Advice: Check whether", 1, true), text)
      assert.truthy(text:find("wxpay.Client{mode=common, mchid=" .. cfg.mchid, 1, true), text)
      local advice = require("wxpay").errors.info("ORDER_NOT_EXIST").action
      local line = text:match("nil\t(ORDER_NOT_EXIST[^\n]*)")
      assert.truthy(line, text)
      assert.truthy(line:find(advice, 1, true), line)
      assert.truthy(line:find("request ", 1, true), line)
    end)
  end)

  it("every run above was checked for key material", function()
    assert.truthy(seen > 40, seen)
  end)
end)
