-- Idempotence under concurrency: 16 separate processes revoke (or cancel) the
-- same paid order at the same instant.  Every one must succeed, and the
-- sandbox must record exactly one refund for the order.
local H = require "helpers"

local N = 16
-- the interpreter for our Lua children (make test-asan points it at its ASan build)
local LUA = os.getenv("WXPAY_TEST_LUA") or (rawget(_G, "jit") and "luajit" or "lua5.4")
local sb, tmp, script

-- The child: builds its client first, sleeps until the shared start time,
-- makes one call, prints one line "<result> <code> <unix time sent>".
local CHILD = [=[
local wxpay = require "wxpay"
local core = require "wxpay.core"
local opts = assert(loadfile(arg[1]))()
local start_at, what, field, id = tonumber(arg[2]), arg[3], arg[4], arg[5]
local c = assert(wxpay.new(opts))
local wait = (start_at - core.time()) * 1000
if wait > 0 then core.sleep_ms(wait) end
local sent = core.time()
local args = { [field] = id }
if what == "cancel" then args.deadline_ms = 20000 end
local res, err = c[what](c, args)
io.write(("%s %s %.3f %.3f\n"):format(tostring(res), err and err.code or "-", sent, wait))
c:close()
]=]

local function serialize(t)
  local parts = {}
  for k, v in pairs(t) do
    if type(v) == "table" then
      local items = {}
      for i, x in ipairs(v) do items[i] = ("%q"):format(x) end
      parts[#parts + 1] = ("[%q] = { %s }"):format(k, table.concat(items, ", "))
    else
      parts[#parts + 1] = ("[%q] = %q"):format(k, v)
    end
  end
  return "return { " .. table.concat(parts, ", ") .. " }\n"
end

-- Launches one child per entry of `calls` ({what, field, id}) at once and
-- returns their output lines.
local function run(calls, mode)
  local optfile = tmp .. "/opts.lua"
  H.write(optfile, serialize(sb:options(nil, mode)))
  local core = require "wxpay.core"
  local start_at = core.time() + 2.5
  local cmd = { ("cd %q && export LUA_PATH=%q LUA_CPATH=%q"):format(H.root, package.path, package.cpath) }
  for i, c in ipairs(calls) do
    cmd[#cmd + 1] = ("%s %s %s %.3f %s %s %s > %s/out.%d 2>&1 &")
      :format(LUA, script, optfile, start_at, c[1], c[2], c[3], tmp, i)
  end
  cmd[#cmd + 1] = "wait"
  local _, ok = H.sh(table.concat(cmd, "\n"))
  assert.truthy(ok)
  local lines = {}
  for i = 1, #calls do
    lines[i] = H.read(("%s/out.%d"):format(tmp, i)) or ""
  end
  return lines, start_at
end

local function parse(line)
  local res, code, sent, waited = line:match("^(%S+) (%S+) ([%d%.]+) ([%-%d%.]+)\n$")
  return res, code, tonumber(sent), tonumber(waited)
end

-- Every child ran its call within a short window: they really overlapped.
local function check_together(lines, start_at)
  for i, line in ipairs(lines) do
    local _, _, sent, waited = parse(line)
    assert.truthy(sent, ("child %d printed: %s"):format(i, line))
    assert.is_true(waited > 0, ("child %d was not ready before the start time"):format(i))
    assert.is_true(math.abs(sent - start_at) < 0.5, ("child %d started %.3f s late"):format(i, sent - start_at))
  end
end

describe("concurrency", function()
  setup(function()
    sb = H.sandbox("concurrency")
    tmp = os.tmpname()
    os.remove(tmp)
    assert(os.execute("mkdir -p " .. tmp))
    script = tmp .. "/child.lua"
    H.write(script, CHILD)
  end)
  teardown(function()
    H.sh("rm -rf " .. tmp)
    sb:stop()
  end)
  before_each(function() sb:reset() end)

  it(N .. " processes revoke the same paid order at once: all true, one refund", function()
    local o = sb:order { out_trade_no = H.order_no("P") }
    local calls = {}
    for i = 1, N do calls[i] = { "revoke", "out_trade_no", o.out_trade_no } end
    local lines, start_at = run(calls)
    check_together(lines, start_at)
    for i, line in ipairs(lines) do
      assert.equal("true", (parse(line)), ("child %d: %s"):format(i, line))
    end
    local after = sb:get_order(o.out_trade_no)
    assert.equal("REVOKED", after.trade_state)
    assert.equal(1, after.refunds)
    assert.equal(N, after.revokes)
    assert.equal(1, sb:stats().refunds)
  end)

  it(N .. " processes cancel the same paid order at once: all REVOKED, one refund", function()
    local o = sb:order { out_trade_no = H.order_no("P") }
    local calls = {}
    for i = 1, N do calls[i] = { "cancel", "transaction_id", o.transaction_id } end
    local lines, start_at = run(calls)
    check_together(lines, start_at)
    for i, line in ipairs(lines) do
      assert.equal("REVOKED", (parse(line)), ("child %d: %s"):format(i, line))
    end
    local after = sb:get_order(o.out_trade_no)
    assert.equal("REVOKED", after.trade_state)
    assert.equal(1, after.refunds)
    assert.equal(1, sb:stats().refunds)
  end)

  it("revokes and cancels mixed, by either id: all succeed, one refund", function()
    local o = sb:order { out_trade_no = H.order_no("P") }
    local calls = {}
    for i = 1, N do
      local field = i % 4 < 2 and "out_trade_no" or "transaction_id"
      calls[i] = { i % 2 == 0 and "cancel" or "revoke", field, o[field] }
    end
    local lines, start_at = run(calls)
    check_together(lines, start_at)
    for i, line in ipairs(lines) do
      assert.equal(i % 2 == 0 and "REVOKED" or "true", (parse(line)), ("child %d: %s"):format(i, line))
    end
    local after = sb:get_order(o.out_trade_no)
    assert.equal(1, after.refunds)
    assert.equal(1, sb:stats().refunds)
  end)

  it("cancels in institutional mode with some answers lost: all REVOKED, one refund", function()
    local o = sb:order { out_trade_no = H.order_no("P"), sp_mchid = sb.cfg.sp_mchid, sub_mchid = sb.cfg.sub_mchid }
    -- four revokes are applied but answered 500, two are applied and dropped
    sb:fault { fault = "apply_then_status", status = 500, code = "SYSTEM_ERROR", match = "/reverse", count = 4 }
    sb:fault { fault = "drop_after_apply", match = "/reverse", count = 2 }
    local calls = {}
    for i = 1, N do
      calls[i] = i % 2 == 0 and { "cancel", "out_trade_no", o.out_trade_no }
        or { "cancel", "transaction_id", o.transaction_id }
    end
    local lines, start_at = run(calls, "institutional")
    check_together(lines, start_at)
    for i, line in ipairs(lines) do
      assert.equal("REVOKED", (parse(line)), ("child %d: %s"):format(i, line))
    end
    local after = sb:get_order(o.out_trade_no)
    assert.equal("REVOKED", after.trade_state)
    assert.equal(1, after.refunds)
    assert.equal(1, sb:stats().refunds)
  end)

  it(N .. " processes revoke " .. N .. " different orders at once: each revoked once", function()
    local calls, nos = {}, {}
    for i = 1, N do
      nos[i] = sb:order { out_trade_no = H.order_no("P") }.out_trade_no
      calls[i] = { "revoke", "out_trade_no", nos[i] }
    end
    local lines, start_at = run(calls)
    check_together(lines, start_at)
    for i, line in ipairs(lines) do
      assert.equal("true", (parse(line)), ("child %d: %s"):format(i, line))
      local after = sb:get_order(nos[i])
      assert.equal(1, after.refunds)
      assert.equal(1, after.revokes)
    end
    assert.equal(N, sb:stats().refunds)
  end)
end)
