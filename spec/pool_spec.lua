-- One connection pool per process, against the sandbox: many clients share
-- one TLS connection; clients closed in any order; a multi handle and a
-- session on the same settings; multi:abort; fork; the proxy option; a
-- strict ca_file.
local core = require "wxpay.core"
local transport = require "wxpay.transport"
local H = require "helpers"

-- the interpreter for our Lua children (make test-asan points it at its ASan build)
local LUA = os.getenv("WXPAY_TEST_LUA") or (rawget(_G, "jit") and "luajit" or "lua5.4")

local sb, tmp, key, pub

local function sh_ok(cmd)
  local _, ok = H.sh(cmd .. " >/dev/null 2>&1")
  return ok
end

local function new_order(state)
  return sb:order { out_trade_no = H.order_no("P"), trade_state = state or "SUCCESS" }
end

local function revoke_target(no)
  return "/v3/global/micropay/transactions/out-trade-no/" .. no .. "/reverse"
end

local function query_target(no)
  return "/v3/global/transactions/out-trade-no/" .. no .. "?mchid=" .. sb.cfg.mchid
end

-- Signed request headers for method + target + body (as {Name = value}).
local function signed(method, target, body)
  return {
    Authorization = assert(key:authorization(sb.cfg.mchid, sb.cfg.serial_no, method, target, body or "")),
    Accept = "application/json", ["Content-Type"] = "application/json", ["User-Agent"] = "wxpay-pool-spec",
  }
end

local function verified(headers, body)
  return pub:verify_response(headers["wechatpay-timestamp"], headers["wechatpay-nonce"], body,
    headers["wechatpay-signature"])
end

local function shuffle(t)
  for i = #t, 2, -1 do
    local j = math.random(1, i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

describe("connection pool", function()
  setup(function()
    sb = H.sandbox("pool")
    tmp = os.tmpname()
    os.remove(tmp)
    tmp = tmp .. ".pool"
    assert(os.execute("mkdir -p " .. tmp) ~= false)
    key = assert(core.load_private_key(H.read(sb.cfg.private_key)))
    pub = assert(core.load_certificate(H.read(sb.cfg.platform_cert)))
  end)
  teardown(function()
    sb:stop()
    os.execute("rm -rf " .. tmp)
  end)
  before_each(function() sb:reset() end)

  it("200 clients, one call each, share one TLS connection", function()
    local pools0 = core.pool_count()
    local o = new_order()
    local clients = {}
    local before = sb:stats()
    for i = 1, 200 do
      clients[i] = sb:client()
      assert.is_true(clients[i]:revoke { out_trade_no = o.out_trade_no }, i)
    end
    local after = sb:stats()
    assert.equal(200, after.requests - before.requests)
    assert.is_true(after.handshakes - before.handshakes <= 2, "handshakes: " .. (after.handshakes - before.handshakes))
    assert.is_true(after.connections - before.connections <= 2)
    assert.equal(1, transport.curl_pool_count())
    assert.equal(pools0 + 1, core.pool_count())
    for _, c in ipairs(clients) do c:close() end
    assert.equal(0, transport.curl_pool_count())
    assert.equal(pools0, core.pool_count())
  end)

  it("clients closed in random order between calls never disturb the others", function()
    local pools0 = core.pool_count()
    local o = new_order()
    local clients, alive = {}, {}
    for i = 1, 60 do
      clients[i] = sb:client { timeout_ms = 3000 + i, max_body_bytes = 4096 + i } -- different limits, one pool
      alive[i] = true
    end
    local before = sb:stats()
    local order = {}
    for i = 1, 60 do order[i] = i end
    shuffle(order)
    local calls = 0
    for _, victim in ipairs(order) do
      -- a call by a random live client, the close of another, a call again
      for _ = 1, 2 do
        local live = {}
        for i in pairs(alive) do live[#live + 1] = i end
        if #live > 0 then
          local c = clients[live[math.random(1, #live)]]
          assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
          calls = calls + 1
        end
      end
      clients[victim]:close()
      alive[victim] = nil
      clients[victim]:close() -- twice: still only one reference dropped
    end
    local after = sb:stats()
    assert.equal(calls, after.requests - before.requests)
    assert.is_true(after.handshakes - before.handshakes <= 1)
    assert.equal(0, transport.curl_pool_count())
    assert.equal(pools0, core.pool_count())
    -- a new client after all closed starts a new pool and works
    local c = sb:client()
    assert.is_true(c:revoke { out_trade_no = o.out_trade_no })
    c:close()
  end)

  it("clients sharing the session keep their own timeouts and size limits", function()
    local o = new_order()
    local small = sb:client { max_body_bytes = 1000, timeout_ms = 600 }
    local big = sb:client {}
    local before = sb:stats()
    sb:fault { fault = "oversized", bytes = 5000, match = o.out_trade_no, method = "GET" }
    local r, err = small:query { out_trade_no = o.out_trade_no }
    assert.is_nil(r)
    assert.matches("size limit", err.message)
    sb:fault { fault = "oversized", bytes = 5000, match = o.out_trade_no, method = "GET" }
    local _, berr = big:query { out_trade_no = o.out_trade_no }
    assert.is_nil(berr and berr.message:find("size limit"))
    sb:fault { fault = "delay", ms = 1500, match = o.out_trade_no, method = "GET" }
    r, err = small:query { out_trade_no = o.out_trade_no }
    assert.is_nil(r)
    assert.equal("TIMEOUT", err.code)
    sb:fault { fault = "delay", ms = 1500, match = o.out_trade_no, method = "GET" }
    assert(big:query { out_trade_no = o.out_trade_no })
    assert.equal(1, transport.curl_pool_count())
    -- the refused answer and the timeout each closed the connection; otherwise reused
    assert.is_true(sb:stats().handshakes - before.handshakes <= 3)
    small:close()
    big:close()
  end)

  it("a multi batch and a session on the same settings share the pool, answers intact", function()
    local pools0 = core.pool_count()
    local m = assert(core.multi { ca_file = sb.cfg.ca_file, max_parallel = 4, timeout_ms = 10000 })
    local s = assert(core.session { ca_file = sb.cfg.ca_file, timeout_ms = 10000 })
    assert.equal(pools0 + 1, core.pool_count())
    local orders, pending, next_i, done = {}, {}, 1, 0
    for i = 1, 12 do orders[i] = new_order() end
    local before = sb:stats()
    local function add_next()
      local o = orders[next_i]
      local target = revoke_target(o.out_trade_no)
      local body = '{"mchid":"' .. sb.cfg.mchid .. '"}'
      assert(m:add(next_i, "POST", sb.cfg.base_url .. target, signed("POST", target, body), body))
      pending[next_i] = o
      next_i = next_i + 1
    end
    for _ = 1, 4 do add_next() end
    local queries = 0
    while done < 12 do
      for _, r in ipairs(assert(m:run(200))) do
        assert.truthy(pending[r.id], "unknown id " .. tostring(r.id))
        assert.equal(204, r.status, r.message)
        assert.is_true(verified(r.headers, r.body))
        pending[r.id] = nil
        done = done + 1
        if next_i <= 12 then add_next() end
      end
      -- in between: a query on the session, over the same pool
      local o = orders[math.random(1, 12)]
      local target = query_target(o.out_trade_no)
      local st, h, body = s:request("GET", sb.cfg.base_url .. target, signed("GET", target, ""))
      assert.equal(200, st, h)
      assert.is_true(verified(h, body))
      assert.matches('"out_trade_no":%s*"' .. o.out_trade_no .. '"', body)
      queries = queries + 1
    end
    for _, o in ipairs(orders) do assert.equal("REVOKED", sb:get_order(o.out_trade_no).trade_state) end
    local after = sb:stats()
    assert.equal(12 + queries, after.requests - before.requests)
    assert.is_true(after.handshakes - before.handshakes <= 5, "handshakes " .. (after.handshakes - before.handshakes))
    -- closed in either order
    m:close()
    local target = query_target(orders[1].out_trade_no)
    assert.equal(200, (s:request("GET", sb.cfg.base_url .. target, signed("GET", target, ""))))
    s:close()
    assert.equal(pools0, core.pool_count())
  end)

  describe("multi hygiene", function()
    it("abort() empties the handle: nothing from before comes back under a recycled id", function()
      local m = assert(core.multi { ca_file = sb.cfg.ca_file, max_parallel = 4 })
      local old, new = {}, {}
      for i = 1, 3 do old[i], new[i] = new_order(), new_order() end
      for i = 1, 3 do
        sb:fault { fault = "delay", ms = 1500, match = old[i].out_trade_no }
        local target = query_target(old[i].out_trade_no)
        assert(m:add(i, "GET", sb.cfg.base_url .. target, signed("GET", target, "")))
      end
      -- an id in flight is refused
      local target = query_target(new[1].out_trade_no)
      local ok, err = m:add(1, "GET", sb.cfg.base_url .. target, signed("GET", target, ""))
      assert.is_nil(ok)
      assert.matches("already in flight", err)
      assert.equal(0, #assert(m:run(100)))
      assert.equal(3, (m:active()))
      m:abort()
      assert.equal(0, (m:active()))
      m:abort() -- idempotent on an empty handle
      for i = 1, 3 do
        target = query_target(new[i].out_trade_no)
        assert(m:add(i, "GET", sb.cfg.base_url .. target, signed("GET", target, "")))
      end
      local got, n = {}, 0
      local deadline = core.monotonic_ms() + 10000
      while n < 3 do
        for _, r in ipairs(assert(m:run(200))) do
          assert.equal(200, r.status)
          assert.truthy(r.body:find(new[r.id].out_trade_no, 1, true), r.body)
          assert.is_nil(got[r.id])
          got[r.id] = true
          n = n + 1
        end
        assert.is_true(core.monotonic_ms() < deadline)
      end
      assert.equal(0, (m:active()))
      core.sleep_ms(1700) -- the aborted ones would have finished by now
      assert.equal(0, #assert(m:run(50)))
      m:close()
    end)
  end)

  it("a multi closed with transfers in flight leaves the session on the same pool working", function()
    local pools0 = core.pool_count()
    local s = assert(core.session { ca_file = sb.cfg.ca_file })
    local m = assert(core.multi { ca_file = sb.cfg.ca_file, max_parallel = 3 })
    local o = new_order()
    local target = query_target(o.out_trade_no)
    assert.equal(200, (s:request("GET", sb.cfg.base_url .. target, signed("GET", target, ""))))
    for i = 1, 3 do
      sb:fault { fault = "delay", ms = 1000, match = o.out_trade_no }
      assert(m:add(i, "GET", sb.cfg.base_url .. target, signed("GET", target, "")))
    end
    assert.equal(0, #assert(m:run(50)))
    m:close()
    m:close()
    assert.has_error(function() m:run(1) end)
    local st, h, body = s:request("GET", sb.cfg.base_url .. target, signed("GET", target, ""))
    assert.equal(200, st)
    assert.is_true(verified(h, body))
    s:close()
    assert.equal(pools0, core.pool_count())
  end)

  describe("fork", function()
    it("the child makes its own pool; the parent's connection survives", function()
      assert(sh_ok("command -v luajit"), "needs luajit (its FFI calls fork; make deps installs it)")
      local script = tmp .. "/fork.lua"
      H.write(script, [[
local ffi = require "ffi"
ffi.cdef "int fork(void); int waitpid(int pid, int *status, int options);"
local core = require "wxpay.core"
io.stdout:setvbuf("no")
local ca, url = arg[1], arg[2]
local hdrs = { "Accept: application/json", "User-Agent: fork-spec" }
local s = assert(core.session { ca_file = ca })
local m = assert(core.multi { ca_file = ca, max_parallel = 2 })
local function get() local st, code = s:request("GET", url, hdrs) return st or code end
io.write("parent1 ", get(), "\n")
local pid = ffi.C.fork()
if pid == 0 then
  io.write("child ", get(), " pools ", core.pool_count(), "\n")
  assert(m:add(7, "GET", url, hdrs))
  local r
  repeat r = assert(m:run(1000))[1] until r
  io.write("childmulti ", r.status or r.code, "\n")
  os.exit(0, true)          -- frees everything in the child (lua_close)
end
local st = ffi.new("int[1]")
ffi.C.waitpid(pid, st, 0)
io.write("parent2 ", get(), " status ", st[0], " pools ", core.pool_count(), "\n")
s:close()
m:close()
]])
      local url = sb.cfg.base_url .. "/v3/global/transactions/out-trade-no/NONE?mchid=" .. sb.cfg.mchid
      local before = sb:stats()
      local out = H.sh(("cd %q && LUA_PATH=%q LUA_CPATH=%q luajit %q %q %q 2>&1"):format(H.root, package.path,
        "./build/luajit/?.so", script, sb.cfg.ca_file, url))
      local after = sb:stats()
      assert.matches("parent1 401", out)
      assert.matches("child 401 pools 1", out)
      assert.matches("childmulti 401", out)
      assert.matches("parent2 401 status 0 pools 1", out)
      -- the parent's one connection, and the child's own one (shared by its session and multi)
      assert.equal(2, after.handshakes - before.handshakes, out)
      assert.equal(4, after.requests - before.requests, out)
    end)
  end)

  describe("proxy option", function()
    local listener, port, log
    setup(function()
      listener = H.recording_listener(tmp)
      port, log = listener.port, listener.log
    end)
    teardown(function() if listener then listener.stop() end end)

    -- A child with the proxy variables set; returns its result and the listener's new log lines.
    local function child(proxy_opt)
      H.write(log, "")
      local code = ([[
local core = require "wxpay.core"
local s = assert(core.session { ca_file = %q, proxy = %s, timeout_ms = 5000 })
local st, code = s:request("GET", %q, { "Accept: application/json", "User-Agent: proxy-spec" })
io.write(tostring(st or code))
]]):format(sb.cfg.ca_file, proxy_opt and ("%q"):format(proxy_opt) or "nil",
        sb.cfg.base_url .. "/v3/global/transactions/out-trade-no/NONE?mchid=" .. sb.cfg.mchid)
      local script = tmp .. "/proxy_child.lua"
      H.write(script, code)
      local px = "http://127.0.0.1:" .. port
      local out = H.sh(("cd %q && env -u no_proxy -u NO_PROXY HTTPS_PROXY=%s https_proxy=%s ALL_PROXY=%s "
        .. "all_proxy=%s LUA_PATH=%q LUA_CPATH=%q %s %q 2>&1"):format(H.root, px, px, px, px, package.path,
        package.cpath, LUA, script))
      return out, H.read(log) or ""
    end

    it("nil ignores HTTPS_PROXY/https_proxy/ALL_PROXY and connects directly", function()
      local out, seen = child(nil)
      assert.equal("401", out)
      assert.equal("", seen)
    end)

    it('"env" uses the environment\'s proxy', function()
      local out, seen = child("env")
      assert.are_not.equal("401", out)
      assert.matches("^CONNECT localhost:%d+ HTTP/1%.1", seen)
    end)

    it("a URL is that proxy", function()
      local out, seen = child("http://127.0.0.1:" .. port)
      assert.are_not.equal("401", out)
      assert.matches("^CONNECT localhost:%d+ HTTP/1%.1", seen)
    end)
  end)

  describe("ca_file", function()
    local other
    setup(function()
      other = tmp .. "/other_ca.pem"
      assert(sh_ok(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %q -out %q -subj /CN=unrelated-ca -days 2")
        :format(tmp .. "/other.key", other)))
    end)

    local function get(ca)
      -- (loading the system's bundle takes seconds under valgrind)
      local s = assert(core.session { ca_file = ca, timeout_ms = 30000 })
      local st, code, msg = s:request("GET", sb.cfg.base_url .. "/v3/x", { "User-Agent: ca-spec" })
      s:close()
      return st or code, msg
    end

    it("trusts the given file", function()
      assert.equal(401, (get(sb.cfg.ca_file)))
    end)

    it("trusts only the given file: an unrelated CA fails with TLS_ERROR", function()
      assert.equal("TLS_ERROR", (get(other)))
      assert.equal("TLS_ERROR", (get(nil))) -- the system store does not know the sandbox's CA
    end)

    it("no CA directory is consulted when ca_file is given (CURLOPT_CAPATH unset)", function()
      assert(sh_ok("command -v strace"), "needs strace (make deps installs it)")
      local script = tmp .. "/ca_child.lua"
      H.write(script, ([[
local core = require "wxpay.core"
local s = assert(core.session { ca_file = %q, timeout_ms = 5000 })
local st, code = s:request("GET", %q, { "User-Agent: ca-spec" })
io.write(tostring(st or code))
]]):format(other, sb.cfg.base_url .. "/v3/x"))
      local trace = tmp .. "/ca.trace"
      local out = H.sh(("cd %q && LUA_PATH=%q LUA_CPATH=%q strace -f -e trace=%%file -o %q %s %q 2>/dev/null")
        :format(H.root, package.path, package.cpath, trace, LUA, script))
      assert.equal("TLS_ERROR", out)
      local t = H.read(trace) or ""
      assert.truthy(t:find("other_ca.pem", 1, true), "strace saw nothing")
      -- Debian's libcurl default CAPATH would have OpenSSL look the issuer up there
      assert.is_nil(t:find("/etc/ssl/certs/", 1, true), "a CA directory was searched")
    end)
  end)
end)
