-- The README's snippets run as written (spec/readme_blocks.lua finds the marked
-- blocks): the REPL section's shell lines start a sandbox and seed an order, its
-- Lua lines revoke that order through the sandbox's ready client.json; the CLI line
-- runs; the POS and revoke_many scripts run with merchant.json = that client.json.
-- Every `--> TEXT` in a Lua block must be what the line prints.  The nginx blocks
-- run in a real nginx: tools/suites/readme-nginx.sh.
local H = require "helpers"
local R = require "readme_blocks"

local README = assert(H.read("README.md"))
local JIT = rawget(_G, "jit") ~= nil
local LUA = JIT and "luajit" or "lua5.4"
local BUILD = JIT and "build/luajit" or "build/5.4"
local root = H.root
local SB = root .. "/.sandbox-test/readme-" .. (JIT and "jit" or "54")
local PLACEHOLDER = "/tmp/wxpay-sb"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function fill(code)
  return (code:gsub(PLACEHOLDER:gsub("%p", "%%%0"), (SB:gsub("%%", "%%%%"))))
end

-- runs a Lua snippet in `cwd`; returns stdout lines, ok, the whole output
local function run_lua(code, cwd)
  local file = os.tmpname()
  H.write(file, code)
  local errf = os.tmpname()
  local out, ok = H.sh(("cd %s && LUA_PATH=%s LUA_CPATH=%s %s %s 2>%s"):format(shq(cwd),
    shq(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"), shq(root .. "/" .. BUILD .. "/?.so;;"),
    LUA, file, errf))
  local err = H.read(errf) or ""
  os.remove(file)
  os.remove(errf)
  local lines = {}
  for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  return lines, ok, out .. err
end

local function check_expectations(code, lines, all)
  local want = R.expectations(code)
  assert(#want > 0, "a tested Lua block with no `-->` expectation")
  assert.equal(#want, #lines, "printed lines vs `-->` expectations:\n" .. all)
  for i, pat in ipairs(want) do
    assert(lines[i]:match(pat), ("line %d: want %s, got %q"):format(i, pat, lines[i]))
  end
end

local function seed(spec)
  local sandbox = H.attach(SB .. "/sandbox.json")
  for item in (spec or ""):gmatch("[^,]+") do
    local no, state = item:match("^([^:]+):(%u+)$")
    assert(no, "bad seed " .. item)
    local st = sandbox:control("POST", "/orders", { out_trade_no = no, trade_state = state })
    assert(st == 200 or st == 201, "seeding " .. no .. ": " .. tostring(st))
  end
end

describe("README snippets", function()
  teardown(function()
    H.sh("sandbox/ctl stop " .. shq(SB))
  end)

  it("marks its runnable blocks (REPL, CLI, POS, revoke_many, nginx.conf, handler)", function()
    assert.equal(2, #R.find(README, "sh"))
    assert.equal(3, #R.find(README, "lua"))
    assert.equal(1, #R.find(README, "nginx", "conf"))
    assert.equal(1, #R.find(README, "nginx", "handler"))
    for _, b in ipairs(R.blocks(README)) do
      assert.is_truthy(({ lua = true, sh = true, nginx = true })[b.kind], b.kind)
    end
  end)

  it("the REPL section: sandbox/ctl start, seed, then revoke T1001 from client.json", function()
    H.sh("sandbox/ctl stop " .. shq(SB))
    local start = R.find(README, "sh")[1]
    assert.truthy(start.code:find("sandbox/ctl start " .. PLACEHOLDER, 1, true))
    local out, ok = H.sh("set -e\n" .. fill(start.code))
    assert(ok, out)
    assert.is_string(H.read(SB .. "/client.json"), "the sandbox wrote no client.json")
    local repl = R.find(README, "lua")[1]
    assert.truthy(repl.code:find('wxpay.new("' .. PLACEHOLDER .. '/client.json")', 1, true))
    local lines, rok, all = run_lua(fill(repl.code), root)
    assert(rok, all)
    check_expectations(repl.code, lines, all)
    local o = H.attach(SB .. "/sandbox.json"):get_order("T1001")
    assert.equal("REVOKED", o.trade_state)
  end)

  it("the CLI line runs (its own --sandbox) and exits 0", function()
    local cli = R.find(README, "sh")[2]
    assert.truthy(cli.code:find("bin/wxpay", 1, true))
    local out, ok = H.sh(cli.code:gsub("%s*#[^\n]*", "") .. " 2>&1")
    assert(ok, out)
    assert.matches("REVOKED", out)
  end)

  for i, label in ipairs { "the POS script", "the revoke_many script" } do
    it(label .. " runs with merchant.json = the sandbox's client.json", function()
      if not H.read(SB .. "/sandbox.json") then
        local out, ok = H.sh("sandbox/ctl start " .. shq(SB) .. " >/dev/null 2>&1")
        assert(ok, out)
      end
      local b = R.find(README, "lua", "cwd")[i]
      assert.is_table(b)
      local dir = os.tmpname()
      os.remove(dir)
      H.sh("mkdir -p " .. shq(dir) .. " && cp " .. shq(SB .. "/client.json") .. " " .. shq(dir .. "/merchant.json"))
      seed(b.attrs.seed)
      local lines, ok, all = run_lua(b.code, dir)
      H.sh("rm -rf " .. shq(dir))
      assert(ok, all)
      check_expectations(b.code, lines, all)
    end)
  end
end)
