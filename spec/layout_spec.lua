-- The shape of the Lua layer (issue "one job per module"): every module says
-- its job and what it must not do, stays small, and errors.codes lists codes.
local H = require "helpers"

-- Modules allowed past 400 lines, each with the one-sentence reason.
local LONG = {
  ["lua/wxpay/cosocket.lua"] = "a whole HTTP/1.1 client over ngx cosockets (pool, TLS, request, "
    .. "status/headers/chunked body, timeouts) that must be read as one piece",
}

local function modules()
  local list = {}
  for f in H.sh("ls lua/wxpay/*.lua lua/wxpay/cli/*.lua sandbox/cli.lua"):gmatch("%S+") do
    list[#list + 1] = f
  end
  return list
end

describe("layout", function()
  it("every Lua module opens with its job and what it must not do", function()
    local files = modules()
    assert.is_true(#files >= 15)
    for _, f in ipairs(files) do
      local text = assert(H.read(f))
      assert.truthy(text:match("^%-%-%-? ?%S"), f .. " does not open with a comment")
      local head = text:sub(1, 800)
      assert.truthy(head:find("Must not", 1, true), f .. " does not say what it must not do")
    end
  end)

  it("no module is over 400 lines without a stated reason", function()
    for _, f in ipairs(modules()) do
      local n = select(2, assert(H.read(f)):gsub("\n", ""))
      if n > 400 then assert.is_string(LONG[f], ("%s has %d lines"):format(f, n)) end
    end
  end)

  it("wxpay.errors.codes lists every code and nothing else, sorted", function()
    local errors = require("wxpay").errors
    local seen = {}
    for i, c in ipairs(errors.codes) do
      assert.equal("string", type(c))
      assert.equal(c, errors[c])
      if i > 1 then assert.is_true(errors.codes[i - 1] < c) end
      seen[c] = true
    end
    for k, v in pairs(errors) do
      if type(v) == "string" then assert.is_true(seen[k], k) end
    end
    for _, c in ipairs { "SYSTEM_ERROR", "BAD_SIGNATURE", "INVALID_ARGUMENT", "TRADE_ERROR" } do
      assert.is_true(seen[c], c)
    end
  end)

  it("the client's methods come from exactly one module each", function()
    local Client = require "wxpay.client"
    for _, m in ipairs { "revoke", "query", "request", "certificates", "cancel", "revoke_many",
      "close", "_call", "_send", "_verify", "_ensure_keys" } do
      assert.is_function(Client[m], m)
    end
  end)
end)
