-- The rockspec and `make install` ship every module the library has.
local H = require "helpers"

local function lua_modules()
  local out = H.sh("ls lua/wxpay/*.lua lua/wxpay/*/*.lua")
  local mods = {}
  for f in out:gmatch("lua/wxpay/([%w_/]+)%.lua") do
    mods[f == "init" and "wxpay" or ("wxpay." .. f:gsub("/", "."))] = "lua/wxpay/" .. f .. ".lua"
  end
  return mods
end

describe("packaging", function()
  it("the rockspec names every Lua module and the C sources", function()
    local env = {}
    local text = assert(H.read("wxpay-scm-1.rockspec"))
    local setfenv = rawget(_G, "setfenv")
    local chunk
    if setfenv then -- LuaJIT
      chunk = assert(rawget(_G, "loadstring")(text, "=rockspec"))
      setfenv(chunk, env)
    else
      chunk = assert(load(text, "=rockspec", "t", env))
    end
    chunk()
    assert.equal("3.0", env.rockspec_format)
    -- "make": core.so is compiled by the Makefile's rock-install straight into the
    -- rock's LIBDIR (tools/suites/luarocks.sh runs it for real)
    assert.equal("make", env.build.type)
    assert.equal("rock-install", env.build.install_target)
    local mods = env.build.install.lua
    for name, path in pairs(lua_modules()) do
      assert.equal(path, mods[name], name)
    end
    local mk = assert(H.read("Makefile"))
    for f in H.sh("ls src/*.c"):gmatch("src/[%w_]+%.c") do
      assert.truthy(mk:match("\nSRC%s*:=[^\n]*" .. f:gsub("%p", "%%%0")), f)
    end
    assert.equal("bin/wxpay", env.build.install.bin.wxpay)
  end)

  it("make install puts the modules, core.so and the command in the standard layout", function()
    local dest = os.tmpname()
    os.remove(dest)
    local out, ok = H.sh(("make -s install PREFIX=/usr/local DESTDIR=%s 2>&1"):format(dest))
    assert(ok, out)
    local abi = rawget(_G, "jit") and "5.1" or "5.4"
    if abi == "5.1" then
      out, ok = H.sh(("make -s install LUA=luajit PREFIX=/usr/local DESTDIR=%s 2>&1"):format(dest))
      assert(ok, out)
    end
    for name in pairs(lua_modules()) do
      local file = name == "wxpay" and "init" or name:match("^wxpay%.(.+)$"):gsub("%.", "/")
      assert.is_string(H.read(("%s/usr/local/share/lua/%s/wxpay/%s.lua"):format(dest, abi, file)), name)
    end
    assert.is_string(H.read(("%s/usr/local/lib/lua/%s/wxpay/core.so"):format(dest, abi)))
    -- the 5.4 command is wxpay; a LuaJIT install beside it is wxpay-luajit, never a replacement
    assert.matches("^#!/usr/bin/env lua5.4\n", H.read(dest .. "/usr/local/bin/wxpay"))
    if abi == "5.1" then
      assert.matches("^#!/usr/bin/env luajit\n", H.read(dest .. "/usr/local/bin/wxpay-luajit"))
    end
    H.sh("rm -rf " .. dest)
  end)
end)
