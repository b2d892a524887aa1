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
    assert.equal("builtin", env.build.type)
    local mods = env.build.modules
    for name, path in pairs(lua_modules()) do
      assert.equal(path, mods[name], name)
    end
    local srcs = table.concat(mods["wxpay.core"].sources, " ")
    for f in H.sh("ls src/*.c"):gmatch("src/[%w_]+%.c") do
      assert.truthy(srcs:find(f, 1, true), f)
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
    assert.is_string(H.read(dest .. "/usr/local/bin/wxpay"))
    H.sh("rm -rf " .. dest)
  end)
end)
