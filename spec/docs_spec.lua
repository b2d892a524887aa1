-- The reference in the repository keeps up with the code: every wxpay.new option,
-- public function, client method and error code is in docs/api.md, its error table is
-- what wxpay.errors says, every flag and command of `wxpay --help` is in docs/cli.md,
-- and the README and docs/ link only to files inside the repository.
local H = require "helpers"
local wxpay = require "wxpay"
local config = require "wxpay.config"
local gen = dofile("tools/gen-errors-doc.lua")

local API = assert(H.read("docs/api.md"), "docs/api.md is missing")

local function has(text, s) return text:find(s, 1, true) ~= nil end

local function sorted_keys(t, filter)
  local out = {}
  for k, v in pairs(t) do
    if type(k) == "string" and (not filter or filter(k, v)) then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

describe("docs/api.md", function()
  it("names every wxpay.new option in an options table row", function()
    local opts = sorted_keys(config.OPTIONS)
    assert(#opts >= 18, "config.OPTIONS looks empty")
    local missing = {}
    for _, name in ipairs(opts) do
      if not has(API, "| `" .. name .. "` |") then missing[#missing + 1] = name end
    end
    assert.same({}, missing)
  end)

  it("names every public field of wxpay and wxpay.errors", function()
    local missing = {}
    for _, k in ipairs(sorted_keys(wxpay)) do
      if not has(API, "`wxpay." .. k) then missing[#missing + 1] = "wxpay." .. k end
    end
    local codes = {}
    for _, c in ipairs(wxpay.errors.codes) do codes[c] = true end
    for _, k in ipairs(sorted_keys(wxpay.errors, function(k) return not codes[k] end)) do
      if not has(API, "`wxpay.errors." .. k) then missing[#missing + 1] = "wxpay.errors." .. k end
    end
    assert.same({}, missing)
  end)

  it("documents every client method (the Client's functions without a leading _)", function()
    local names = sorted_keys(wxpay.Client, function(k, v) return type(v) == "function" and k:sub(1, 1) ~= "_" end)
    assert(#names >= 8, "too few client methods found")
    local missing = {}
    for _, m in ipairs(names) do
      if not (has(API, "client:" .. m) or has(API, "wxpay.Client." .. m)) then missing[#missing + 1] = m end
    end
    assert.same({}, missing)
  end)

  it("names every error code, and its table is the one errors.lua generates", function()
    local missing = {}
    for _, c in ipairs(wxpay.errors.codes) do
      if not has(API, "`" .. c .. "`") then missing[#missing + 1] = c end
    end
    assert.same({}, missing)
    local section = gen.section(API)
    assert(section, "docs/api.md lost its errors:begin/end markers")
    assert.equal(gen.table(), section, "run: lua5.4 tools/gen-errors-doc.lua")
  end)

  it("covers the contract: return shapes, meta, transport and logger contracts, the CLI pointer", function()
    for _, s in ipairs { "request_id =, status =, ms =, base_url =", "{ status =, headers =, body =, raw = }",
      "{ serial_no =, effective_time =, expire_time =, source = }", "{ confirmed =, attempts =, order = }",
      "## The transport-function contract", "## The logger contract", "(cli.md)",
      "method =, url =, headers =, body =, timeout_ms =, connect_timeout_ms =" } do
      assert(has(API, s), "missing: " .. s)
    end
  end)
end)

describe("docs/cli.md", function()
  it("has every command, flag and WXPAY_ variable of `wxpay --help`", function()
    local cli = assert(H.read("docs/cli.md"))
    local help, ok = H.sh((rawget(_G, "jit") and "luajit" or "lua5.4") .. " bin/wxpay --help")
    assert(ok, help)
    local missing, seen = {}, {}
    local function need(s)
      if not seen[s] and not has(cli, s) then missing[#missing + 1] = s end
      seen[s] = true
    end
    for flag in help:gmatch("%-%-[%w][%w%-]*") do need(flag) end
    for short in help:gmatch("%s(%-%a),") do need(short) end
    for var in help:gmatch("WXPAY_[%u_]+") do need(var) end
    local commands = help:match("Commands:\n(.-)\n\n")
    for line in commands:gmatch("[^\n]+") do
      local cmd = line:match("^  (%l+)%s")
      if cmd then need("`" .. cmd) end
    end
    assert.same({}, missing)
  end)
end)

describe("links in README.md and docs/", function()
  -- written on other branches at the same time; they land when those merge
  local PENDING = {}
  local files = { "README.md" }
  for f in H.sh("ls docs/*.md"):gmatch("[^\n]+") do files[#files + 1] = f end

  local function normalize(path)
    local parts = {}
    for p in path:gmatch("[^/]+") do
      if p == ".." then
        if #parts == 0 then return nil end
        parts[#parts] = nil
      elseif p ~= "." then parts[#parts + 1] = p end
    end
    return table.concat(parts, "/")
  end

  it("point only at files inside the repository, which exist", function()
    local bad = {}
    for _, f in ipairs(files) do
      local text = assert(H.read(f))
      local dir = f:match("^(.*)/[^/]*$")
      if text:find("../shared", 1, true) then bad[#bad + 1] = f .. ": mentions ../shared" end
      for target in text:gmatch("%]%(([^)%s]+)%)") do
        local path = target:gsub("#.*$", "")
        if target:match("^%a[%w+.-]*:") then
          bad[#bad + 1] = f .. ": external link " .. target
        elseif path ~= "" then
          local full = normalize((dir and (dir .. "/") or "") .. path)
          if not full then
            bad[#bad + 1] = f .. ": leaves the repository: " .. target
          elseif not PENDING[full] and not H.read(full) and not select(2, H.sh("test -d " .. full)) then
            bad[#bad + 1] = f .. ": no such file " .. target
          end
        end
      end
      for url in text:gmatch("<(https?://[^>]+)>") do bad[#bad + 1] = f .. ": external link " .. url end
    end
    assert.same({}, bad)
  end)

  it("the README links to the API reference, the CLI reference and going live", function()
    local readme = assert(H.read("README.md"))
    for _, l in ipairs { "(docs/api.md)", "(docs/cli.md)", "(docs/going-live.md)" } do
      assert(has(readme, l), "README does not link " .. l)
    end
  end)
end)
