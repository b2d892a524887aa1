-- wxpay.core additions without a server: range checks before every number
-- cast, private keys from files, private directories and files for a
-- certificate cache, the nonce pool (uniformity, fork).
local core = require "wxpay.core"
local H = require "helpers"

-- the interpreter for our Lua children (make test-asan points it at its ASan build)
local LUA = os.getenv("WXPAY_TEST_LUA") or (rawget(_G, "jit") and "luajit" or "lua5.4")

local tmp = os.tmpname()
os.remove(tmp)
local dir = tmp .. ".ext"

local function sh_ok(cmd)
  local _, ok = H.sh(cmd .. " 2>&1")
  return ok
end

local function is_link(path) return sh_ok(("test -L %q"):format(path)) end

local NAN, HUGE = 0 / 0, math.huge
local unpack = rawget(table, "unpack") or rawget(_G, "unpack")

describe("wxpay.core (additions)", function()
  setup(function()
    assert(os.execute("mkdir -p " .. dir) ~= false)
    assert(sh_ok(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s/key.pem"):format(dir)))
    assert(sh_ok(("openssl req -new -x509 -key %s/key.pem -subj /CN=ext -days 2 -out %s/cert.pem"):format(dir, dir)))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  describe("numbers are range-checked before they are cast", function()
    local key
    before_each(function() key = assert(core.load_private_key(H.read(dir .. "/key.pem"))) end)

    it("key:authorization refuses an infinite, NaN, negative or huge timestamp", function()
      for _, bad in ipairs { HUGE, -HUGE, NAN, 1e300, -1, 1e12, "soon" } do
        local ok, err = pcall(key.authorization, key, "1", "AB", "GET", "/v3/x", "", bad, "n1")
        assert.is_false(ok, tostring(bad))
        assert.matches("timestamp", err)
      end
      assert.matches("timestamp=\"1554208460\"", (key:authorization("1", "AB", "GET", "/v3/x", "", 1554208460, "n1")))
      assert.matches("timestamp=\"1554208460\"", (key:authorization("1", "AB", "GET", "/v3/x", "", 1554208460.7, "n1")))
    end)

    it("core.session and core.multi refuse out-of-range options", function()
      for _, field in ipairs { "timeout_ms", "connect_timeout_ms", "max_body", "max_idle_s" } do
        for _, bad in ipairs { 1e300, HUGE, NAN, -1, "x" } do
          local ok, err = pcall(core.session, { [field] = bad })
          assert.is_false(ok, field .. "=" .. tostring(bad))
          assert.matches(field, err)
          ok, err = pcall(core.multi, { [field] = bad })
          assert.is_false(ok, field .. "=" .. tostring(bad))
          assert.matches(field, err)
        end
      end
      for _, bad in ipairs { 0, 257, 1e300, NAN, HUGE } do
        local ok, err = pcall(core.multi, { max_parallel = bad })
        assert.is_false(ok, tostring(bad))
        assert.matches("max_parallel", err)
      end
      for _, bad in ipairs { 42, "", true } do
        assert.is_false(pcall(core.session, { proxy = bad }), tostring(bad))
      end
      assert(core.session { timeout_ms = 2147483647, max_body = 0, max_idle_s = 0 }):close()
    end)

    it("session:request and multi:add/run refuse bad per-call numbers before any I/O", function()
      local s = assert(core.session {})
      local m = assert(core.multi { max_parallel = 2 })
      local url = "https://127.0.0.1:1/v3/x"
      for i, name in ipairs { "timeout_ms", "connect_timeout_ms", "max_body" } do
        for _, bad in ipairs { 1e300, HUGE, -HUGE, NAN, -1 } do
          local args = { "GET", url, {}, nil, nil, nil, nil }
          args[4 + i] = bad
          local ok, err = pcall(s.request, s, unpack(args, 1, 7))
          assert.is_false(ok, name .. "=" .. tostring(bad))
          assert.matches(name, err)
          local margs = { 1, "GET", url, {}, nil, nil, nil, nil }
          margs[5 + i] = bad
          ok, err = pcall(m.add, m, unpack(margs, 1, 8))
          assert.is_false(ok, name .. "=" .. tostring(bad))
          assert.matches(name, err)
        end
      end
      for _, bad in ipairs { 1e300, NAN, HUGE, 1.5, "x" } do
        local ok, err = pcall(m.add, m, bad, "GET", url, {})
        assert.is_false(ok, tostring(bad))
        assert.matches("id", err)
      end
      for _, bad in ipairs { 1e300, NAN, -1 } do
        local ok, err = pcall(m.run, m, bad)
        assert.is_false(ok, tostring(bad))
        assert.matches("timeout_ms", err)
      end
      assert.equal(0, (m:active()))
      s:close()
      m:close()
    end)

    it("core.nonce, core.sleep_ms and core.read_private refuse them too", function()
      for _, bad in ipairs { 1e300, NAN, HUGE, 0, 257 } do
        assert.is_false(pcall(core.nonce, bad), tostring(bad))
      end
      assert.equal(7, #core.nonce(7))
      for _, bad in ipairs { 1e300, NAN, HUGE, -HUGE } do
        assert.is_false(pcall(core.sleep_ms, bad), tostring(bad))
      end
      core.sleep_ms(-5)
      core.sleep_ms(0)
      for _, bad in ipairs { 1e300, NAN, -1 } do
        local ok, err = pcall(core.read_private, dir .. "/key.pem", bad)
        assert.is_false(ok)
        assert.matches("max_bytes", err)
      end
    end)
  end)

  describe("load_private_key_file", function()
    it("loads the key and reports the file's mode", function()
      local path = dir .. "/key.pem"
      assert(sh_ok(("chmod 600 %q"):format(path)))
      local k, mode = core.load_private_key_file(path)
      assert.matches("wxpay.PrivateKey{RSA%-2048}", tostring(k))
      assert.equal(tonumber("600", 8), mode)
      assert.equal(core.load_private_key(H.read(path)):sign("abc"), k:sign("abc"))
      assert(sh_ok(("chmod 644 %q"):format(path)))
      local _, mode2 = core.load_private_key_file(path)
      assert.equal(tonumber("644", 8), mode2)
      assert.is_true(mode2 % 64 ~= 0) -- what the Lua layer warns about
      assert(sh_ok(("chmod 600 %q"):format(path)))
      -- a symbolic link to the key is a legitimate key path
      assert(sh_ok(("ln -sf %q %q"):format(path, dir .. "/link.pem")))
      assert(core.load_private_key_file(dir .. "/link.pem"))
    end)

    it("refuses missing files, directories, large files and non-keys, never quoting the file", function()
      local k, err = core.load_private_key_file(dir .. "/missing.pem")
      assert.is_nil(k)
      assert.matches("missing.pem", err)
      k, err = core.load_private_key_file(dir)
      assert.is_nil(k)
      assert.matches("not a regular file", err)
      H.write(dir .. "/big.pem", H.read(dir .. "/key.pem") .. ("#"):rep(65536))
      k, err = core.load_private_key_file(dir .. "/big.pem")
      assert.is_nil(k)
      assert.matches("larger than 65536", err)
      k, err = core.load_private_key_file(dir .. "/cert.pem")
      assert.is_nil(k)
      assert.matches("certificate", err)
      -- a damaged key: the error names the file, never its content
      local pem = H.read(dir .. "/key.pem")
      H.write(dir .. "/bad.pem", (pem:gsub("\n(.)(.)", "\n%2%1", 3)))
      k, err = core.load_private_key_file(dir .. "/bad.pem")
      assert.is_nil(k)
      assert.matches("bad.pem", err)
      for _, frag in ipairs(H.key_fragments(dir .. "/bad.pem")) do
        assert.is_nil(err:find(frag, 1, true))
      end
      for _, frag in ipairs(H.key_fragments(dir .. "/key.pem")) do
        assert.is_nil(err:find(frag, 1, true))
      end
    end)
  end)

  describe("private directory and files", function()
    local base
    before_each(function()
      base = dir .. "/cache" .. math.random(1, 1e9)
    end)

    it("private_dir creates a 0700 directory, once; refuses a missing parent", function()
      assert.is_true(core.private_dir(base))
      assert.equal(tonumber("700", 8), core.file_mode(base))
      assert.is_true(core.private_dir(base))
      local ok, err = core.private_dir(base .. "/no/such")
      assert.is_nil(ok)
      assert.matches("parent", err)
    end)

    it("private_dir refuses a link, a file, a group/other-writable or foreign directory", function()
      assert.is_true(core.private_dir(base))
      assert(sh_ok(("ln -s %q %q"):format(base, base .. ".link")))
      local ok, err = core.private_dir(base .. ".link")
      assert.is_nil(ok)
      assert.matches("symbolic link", err)
      H.write(base .. ".file", "x")
      ok, err = core.private_dir(base .. ".file")
      assert.is_nil(ok)
      assert.matches("not a directory", err)
      for _, mode in ipairs { "770", "702", "777" } do
        assert(sh_ok(("chmod %s %q"):format(mode, base)))
        ok, err = core.private_dir(base)
        assert.is_nil(ok, mode)
        assert.matches("writable by group or others", err)
      end
      assert(sh_ok(("chmod 755 %q"):format(base)))
      assert.is_true(core.private_dir(base)) -- readable by others is the caller's choice
      if H.sh("id -u"):match("^0") then       -- root can hand the directory to someone else
        assert(sh_ok(("chmod 700 %q && chown 65534 %q"):format(base, base)))
        ok, err = core.private_dir(base)
        assert.is_nil(ok)
        assert.matches("owned by uid 65534", err)
      end
    end)

    it("write_private and read_private round-trip with mode 0600 and leave no temporary file", function()
      assert.is_true(core.private_dir(base))
      local path = base .. "/certs.json"
      local data = ("\0\1binary\255"):rep(1000)
      assert.is_true(core.write_private(path, data))
      assert.equal(tonumber("600", 8), core.file_mode(path))
      assert.equal(data, core.read_private(path, 1e6))
      assert.is_true(core.write_private(path, "second"))
      assert.equal("second", core.read_private(path, 6))
      local d, err = core.read_private(path, 5)
      assert.is_nil(d)
      assert.matches("larger than 5", err)
      d, err = core.read_private(base .. "/missing", 10)
      assert.is_nil(d)
      assert.matches("missing", err)
      d, err = core.read_private(base, 10)
      assert.is_nil(d)
      assert.matches("not a regular file", err)
      local ok
      ok, err = core.write_private(base .. "/no/such/file", "x")
      assert.is_nil(ok)
      assert.matches("no/such/file", err)
      assert.equal("certs.json\n", (H.sh(("ls -A %q"):format(base))))
    end)

    it("a symbolic link planted at the path: read refuses, write replaces the link, not its target", function()
      assert.is_true(core.private_dir(base))
      local victim, path = base .. "/victim", base .. "/certs.json"
      H.write(victim, "keep me")
      assert(sh_ok(("ln -s %q %q"):format(victim, path)))
      local d, err = core.read_private(path, 100)
      assert.is_nil(d)
      assert.matches("symbolic link", err)
      assert.is_true(core.write_private(path, "new"))
      assert.is_false(is_link(path))
      assert.equal("new", core.read_private(path, 100))
      assert.equal("keep me", H.read(victim))
    end)

    it("two processes writing at once never leave a torn file", function()
      assert.is_true(core.private_dir(base))
      local path = base .. "/race.bin"
      local A, B = ("A"):rep(300000), ("B"):rep(200000) .. "end"
      assert.is_true(core.write_private(path, A))
      local child = base .. "/writer.lua"
      H.write(child, [[
local core = require "wxpay.core"
local path, what, stop = arg[1], arg[2], arg[3]
local data = what == "A" and ("A"):rep(300000) or (("B"):rep(200000) .. "end")
local t0 = os.time()
repeat   -- until the reader has read enough (bounded: 120 s)
  assert(core.write_private(path, data))
  local f = io.open(stop, "r")
  if f then f:close() end
until f or os.time() - t0 > 120
io.open(arg[4], "w"):close()
]])
      local env = ("cd %q && LUA_PATH=%q LUA_CPATH=%q"):format(H.root, package.path, package.cpath)
      local stop = base .. "/stop"
      for _, w in ipairs { "A", "B" } do
        assert(os.execute(("%s %s %q %q %s %q %q >/dev/null 2>&1 &"):format(env, LUA, child, path, w,
          stop, base .. "/done" .. w)))
      end
      -- 40 reads while both keep renaming over the file (however slow this process
      -- runs, under valgrind too), then the writers stop
      local seen = {}
      for _ = 1, 40 do
        local d = assert(core.read_private(path, 1e6))
        assert.is_true(d == A or d == B, "torn read of " .. #d .. " bytes")
        seen[d:sub(1, 1)] = (seen[d:sub(1, 1)] or 0) + 1
      end
      H.write(stop, "")
      local deadline = core.monotonic_ms() + 60000
      repeat core.sleep_ms(20) until (H.read(base .. "/doneA") and H.read(base .. "/doneB"))
        or core.monotonic_ms() > deadline
      assert.truthy(H.read(base .. "/doneA") and H.read(base .. "/doneB"), "the writers did not finish")
      assert.truthy(seen.A or seen.B)
      local left = H.sh(("ls -A %q"):format(base))
      assert.is_nil(left:find("%.tmp"), left)
    end)
  end)

  describe("nonce pool", function()
    it("keeps the 62 alphanumerics equally likely", function()
      local counts, total = {}, 0
      for _ = 1, 4000 do
        for c in core.nonce(32):gmatch(".") do
          counts[c] = (counts[c] or 0) + 1
          total = total + 1
        end
      end
      local n = 0
      for c, k in pairs(counts) do
        n = n + 1
        assert.matches("^%w$", c)
        -- expected 2064.5 each, sigma ~45: 15% is over 6 sigma
        assert.is_true(math.abs(k - total / 62) < 0.15 * total / 62, c .. " " .. k)
      end
      assert.equal(62, n)
    end)

    it("is discarded after fork: parent and child never hand out the same nonces", function()
      assert(sh_ok("command -v luajit"), "needs luajit (its FFI calls fork; make deps installs it)")
      local script = dir .. "/forknonce.lua"
      H.write(script, [[
local ffi = require "ffi"
ffi.cdef "int fork(void); int waitpid(int pid, int *status, int options);"
local core = require "wxpay.core"
io.stdout:setvbuf("no")
core.nonce()                       -- the pool is filled before the fork
local pid = ffi.C.fork()
if pid == 0 then
  io.write("child ", core.nonce(), " ", core.nonce(), "\n")
  os.exit(0)
end
local st = ffi.new("int[1]")
ffi.C.waitpid(pid, st, 0)
io.write("parent ", core.nonce(), " ", core.nonce(), "\n")
]])
      local out = H.sh(("cd %q && LUA_PATH=%q LUA_CPATH=%q luajit %q 2>&1"):format(H.root, package.path,
        "./build/luajit/?.so", script))
      local c1, c2 = out:match("child (%w+) (%w+)")
      local p1, p2 = out:match("parent (%w+) (%w+)")
      assert.truthy(c1 and p1, out)
      assert.are_not.equal(c1, p1)
      assert.are_not.equal(c2, p2)
    end)
  end)
end)
