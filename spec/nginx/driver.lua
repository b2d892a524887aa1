--- The nginx suite's test driver (Lua 5.4 + the curl CLI); run by tools/suites/nginx.sh.
--
--   lua5.4 spec/nginx/driver.lua run    the tests against the running nginx
--   lua5.4 spec/nginx/driver.lua logs   checks of nginx's logs (after nginx stopped)
--
-- Environment (set by nginx.sh): WXPAY_NGINX_URL, WXPAY_SANDBOX_JSON,
-- WXPAY_NGINX_LOGS, WXPAY_BOOT_ORDER.  Each check prints "ok - NAME" or
-- "not ok - NAME: why"; the last line is "counts: PASSED FAILED".
package.path = "./spec/?.lua;./lua/?.lua;./lua/?/init.lua;" .. package.path
local cjson = require "cjson"
local H = require "helpers"

local URL = assert(os.getenv("WXPAY_NGINX_URL"), "WXPAY_NGINX_URL is not set")
local LOGS = assert(os.getenv("WXPAY_NGINX_LOGS"))
local BOOT_ORDER = assert(os.getenv("WXPAY_BOOT_ORDER"))

local read, sh = H.read, H.sh
local sandbox = H.attach(assert(os.getenv("WXPAY_SANDBOX_JSON")))
local SB = sandbox.cfg
local TMP = os.tmpname()

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function decode(text)
  local ok, v = pcall(cjson.decode, text or "")
  if ok then return v end
  return nil
end

--- GET path on nginx -> decoded JSON (or raw text), http status, seconds
local function get(path, max_s)
  os.remove(TMP)      -- never read an earlier answer when this one fails
  local out = sh(("curl -s -m %d -o %s -w '%%{http_code} %%{time_total}' %s")
    :format(max_s or 30, TMP, shq(URL .. path)))
  local status, secs = out:match("^(%d+) ([%d.]+)")
  status = tonumber(status)
  if not status or status == 0 then return "(no answer from nginx)", status, tonumber(secs) end
  local body = read(TMP) or ""
  return decode(body) or body, status, tonumber(secs)
end

local function control(method, path, body)
  return sandbox:control(method, path, body)
end

local function seed(no, state)
  return sandbox:order { out_trade_no = no, trade_state = state or "SUCCESS" }
end

local function fault(spec)
  sandbox:fault(spec)
end

local function sandbox_order(no)
  return sandbox:get_order(no)
end

local function stats()
  local _, s = control("GET", "/stats")
  return s
end

local seq = 0
local function order_no(prefix)
  seq = seq + 1
  return ("%s%d%05d%03d"):format(prefix or "N", os.time() % 100000, math.random(0, 99999), seq)
end

local function now_s()
  return tonumber((sh("date +%s.%N")))
end

-------------------------------------------------------------------------------
-- A tiny harness
-------------------------------------------------------------------------------

local passed, failed = 0, 0
local notes = {}

local function check(cond, fmt, ...)
  if not cond then error({ why = (fmt or "check failed"):format(...) }, 2) end
end

local function show(v)
  if type(v) == "table" then return cjson.encode(v) end
  return tostring(v)
end

local function test(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
    print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name .. ": " .. (type(err) == "table" and err.why or tostring(err)))
  end
end

local function note(fmt, ...)
  local line = fmt:format(...)
  notes[#notes + 1] = line
  print("# " .. line)
end

local function expect_code(path, code, extra)
  local r = get(path)
  check(type(r) == "table", "no JSON answer from %s: %s", path, show(r))
  check(r.ok == false and r.code == code, "%s: want %s, got %s", path, code, show(r))
  if extra then extra(r) end
  return r
end

local function expect_ok(path)
  local r = get(path)
  check(type(r) == "table" and r.ok == true, "%s: want ok, got %s", path, show(r))
  return r
end

-------------------------------------------------------------------------------
-- The tests
-------------------------------------------------------------------------------

local function run()
  math.randomseed(os.time())

  test("init_worker: the client made there queried over libcurl, a timer revoked over cosockets", function()
    local r
    for _ = 1, 50 do
      r = get("/boot")
      if type(r) == "table" and r.ok then break end
      os.execute("sleep 0.1")
    end
    check(type(r) == "table" and r.ok, "the start-up timer never finished: %s", show(r))
    local b = r.boot
    check(b.init_phase == "init_worker" and b.init_cosocket_phase == false,
      "init_worker phase: %s", show(b))
    check(b.init_query == "SUCCESS", "the init_worker query answered %s", show(b.init_query))
    check(b.init_used.curl == true and b.init_used.cosocket == false,
      "init_worker should have used libcurl only: %s", show(b.init_used))
    check(b.init_forced.ok == false and b.init_forced.code == "NETWORK_ERROR"
      and b.init_forced.sent == false and b.init_forced.message:find("init_worker"),
      "transport = \"cosocket\" in init_worker: %s", show(b.init_forced))
    local t = b.timer
    check(t.phase == "timer" and t.cosocket_phase == true, "timer phase: %s", show(t))
    check(t.ok == true, "the timer's revoke failed: %s", show(t))
    check(t.used.cosocket == true, "the timer did not use cosockets: %s", show(t.used))
    local o = sandbox_order(BOOT_ORDER)
    check(o and o.trade_state == "REVOKED" and o.refunds == 1, "boot order: %s", show(o))
    -- and the same client now serves a content handler over cosockets
    local q = expect_ok("/query?out_trade_no=" .. BOOT_ORDER)
    check(q.trade_state == "REVOKED" and q.phase == "content", "content query: %s", show(q))
  end)

  test("keep-alive: 20 revokes through nginx cost exactly 1 TLS handshake", function()
    check(control("POST", "/reset") == 200, "reset failed")
    local nos = {}
    for i = 1, 20 do nos[i] = order_no("K"); seed(nos[i]) end
    -- empty the pool first: an answer with "Connection: close" is not pooled
    fault { fault = "connection_close", match = "/transactions/out-trade-no/" .. nos[1], method = "GET" }
    local q = expect_ok("/query?out_trade_no=" .. nos[1])
    check(q.trade_state == "SUCCESS", "query before: %s", show(q))
    local s0 = stats()
    for i = 1, 20 do expect_ok("/revoke?out_trade_no=" .. nos[i]) end
    local s1 = stats()
    local hs, conns = s1.handshakes - s0.handshakes, s1.connections - s0.connections
    note("keep-alive: 20 revokes -> %d handshake(s), %d connection(s), %d request(s)",
      hs, conns, s1.requests - s0.requests)
    check(hs == 1, "handshakes rose by %d, want exactly 1", hs)
    check(s1.requests - s0.requests == 20, "the sandbox saw %d requests", s1.requests - s0.requests)
    for i = 1, 20 do
      local o = sandbox_order(nos[i])
      check(o.trade_state == "REVOKED" and o.refunds == 1, "%s: %s", nos[i], show(o))
    end
  end)

  test("revoke by out_trade_no through nginx: REVOKED with 1 refund", function()
    local no = order_no("R")
    seed(no)
    local r = expect_ok("/revoke?out_trade_no=" .. no)
    check(r.used.cosocket, "not over cosockets: %s", show(r))
    local o = sandbox_order(no)
    check(o.trade_state == "REVOKED" and o.refunds == 1 and o.revokes == 1, "order: %s", show(o))
  end)

  test("revoke by transaction_id through nginx", function()
    local no = order_no("I")
    local o = seed(no)
    expect_ok("/revoke?transaction_id=" .. o.transaction_id)
    o = sandbox_order(no)
    check(o.trade_state == "REVOKED" and o.refunds == 1, "order: %s", show(o))
  end)

  -- A revokes while the sandbox holds its answer 2 s; B (/trivial) starts 200 ms
  -- later.  Returns A's answer, A and B's wall times, and their completion order.
  local function a_and_b(client)
    local no = order_no("A")
    seed(no)
    fault { fault = "delay", ms = 2000, match = no }
    local a_out, a_end = TMP .. ".a", TMP .. ".aend"
    os.remove(a_out)
    os.remove(a_end)
    local t0 = now_s()
    os.execute(("(curl -s -m 30 -o %s %s; date +%%s.%%N > %s) > /dev/null 2>&1 &")
      :format(a_out, shq(URL .. "/revoke?client=" .. client .. "&out_trade_no=" .. no), a_end))
    os.execute("sleep 0.2")
    local b_start = now_s()
    local b_out = sh(("curl -s -m 30 %s; echo; date +%%s.%%N"):format(shq(URL .. "/trivial")))
    local b_body, b_end = b_out:match("^(.-)\n\n?([%d.]+)%s*$")
    b_end = tonumber(b_end)
    local a_done
    for _ = 1, 150 do
      a_done = tonumber(read(a_end) or "")
      if a_done then break end
      os.execute("sleep 0.1")
    end
    local a = decode(read(a_out))
    os.remove(a_out)
    os.remove(a_end)
    check(a_done, "request A never finished")
    return {
      no = no, a = a, b_body = b_body,
      a_secs = a_done - t0, b_secs = b_end - b_start, b_before_a = b_end < a_done,
      gap = a_done - b_end,
    }
  end

  test("non-blocking: /trivial answers while a revoke waits 2 s for the sandbox", function()
    local m = a_and_b("main")
    note("non-blocking (cosocket): A took %.3f s, B took %.3f s, B finished %.3f s before A",
      m.a_secs, m.b_secs, m.gap)
    check(m.b_body == "ok", "B answered %s", show(m.b_body))
    check(m.b_before_a, "B finished after A (A %.3f s, B %.3f s)", m.a_secs, m.b_secs)
    check(m.b_secs < 0.5, "B took %.3f s", m.b_secs)
    check(m.a_secs >= 1.9, "A took only %.3f s: the delay did not apply", m.a_secs)
    check(type(m.a) == "table" and m.a.ok == true and m.a.used.cosocket, "A: %s", show(m.a))
    local o = sandbox_order(m.no)
    check(o.trade_state == "REVOKED" and o.refunds == 1, "order: %s", show(o))
  end)

  test("control: with transport = \"curl\" the same measurement shows the worker blocked", function()
    local m = a_and_b("curl")
    note("blocking (libcurl forced): A took %.3f s, B took %.3f s, B finished %+.3f s after A",
      m.a_secs, m.b_secs, -m.gap)
    check(type(m.a) == "table" and m.a.ok == true and m.a.used.curl, "A: %s", show(m.a))
    -- B waits for A's handler: both end together (only the clients' exits race)
    check(m.gap < 0.2, "B finished %.3f s before A although libcurl blocks the worker", m.gap)
    check(m.b_secs >= 1.5, "B took only %.3f s", m.b_secs)
    -- more calls: the warning is still logged once (checked in the logs step)
    local no = order_no("C")
    seed(no)
    expect_ok("/query?client=curl&out_trade_no=" .. no)
    expect_ok("/revoke?client=curl&out_trade_no=" .. no)
  end)

  test("revoke_many: 24 revokes, 300 ms each, 8 light threads on pooled cosockets", function()
    local prefix = order_no("M") .. "x"
    for i = 1, 24 do seed(prefix .. i) end
    fault { fault = "delay", ms = 300, match = "/out-trade-no/" .. prefix, count = 24 }
    local s0 = stats()
    local r, _, secs = get(("/revoke_many?prefix=%s&n=24&concurrency=8"):format(prefix))
    local s1 = stats()
    note("revoke_many: 24 x 300 ms with concurrency 8 took %.3f s, %d handshake(s)",
      secs or -1, s1.handshakes - s0.handshakes)
    check(type(r) == "table" and r.ok and r.revoked == 24, "%s", show(r))
    check(secs < 2.5, "took %.3f s: the light threads did not overlap", secs)
    check(s1.handshakes - s0.handshakes <= 8, "%d handshakes for 8 threads", s1.handshakes - s0.handshakes)
    for i = 1, 24 do
      check(sandbox_order(prefix .. i).trade_state == "REVOKED", "%s%d not revoked", prefix, i)
    end
    local _, st, tsecs = get("/trivial")
    check(st == 200 and tsecs < 0.3, "/trivial afterwards: %s", show(tsecs))
  end)

  test("ORDER_NOT_EXIST for an unknown order", function()
    expect_code("/revoke?out_trade_no=" .. order_no("NOPE"), "ORDER_NOT_EXIST",
      function(r) check(r.status == 404, "status %s", show(r.status)) end)
  end)

  for _, f in ipairs { "flip_signature", "missing_signature", "stale_timestamp", "bad_base64_signature" } do
    test("BAD_SIGNATURE for " .. f, function()
      local no = order_no("S")
      seed(no)
      fault { fault = f, match = no }
      expect_code("/revoke?out_trade_no=" .. no, "BAD_SIGNATURE")
    end)
  end

  test("SYSTEM_ERROR for an injected HTTP 500", function()
    local no = order_no("E")
    seed(no)
    fault { fault = "status", status = 500, code = "SYSTEM_ERROR", match = no }
    expect_code("/revoke?out_trade_no=" .. no, "SYSTEM_ERROR", function(r)
      check(r.status == 500 and r.retryable == true, "status/retryable: %s", show(r))
    end)
    check(sandbox_order(no).trade_state == "SUCCESS", "the order changed")
  end)

  test("TIMEOUT when the answer takes longer than timeout_ms (1000 ms)", function()
    local no = order_no("T")
    seed(no)
    fault { fault = "delay", ms = 1600, match = no }
    local r = expect_code("/revoke?client=short&out_trade_no=" .. no, "TIMEOUT", function(r)
      check(r.sent == true, "sent should be true: %s", show(r))
    end)
    local ms = (r.t_end - r.t_start) * 1000
    note("timeout: TIMEOUT after %.0f ms (timeout_ms = 1000)", ms)
    check(ms >= 950 and ms < 1400, "TIMEOUT after %.0f ms", ms)
    os.execute("sleep 0.7")  -- let the sandbox finish the delayed answer
    local no2 = order_no("T")
    seed(no2)
    expect_ok("/revoke?client=short&out_trade_no=" .. no2)
  end)

  test("BAD_RESPONSE for a truncated 204 (headers cut short)", function()
    local no = order_no("U")
    seed(no)
    fault { fault = "truncate", match = no, method = "POST" }
    expect_code("/revoke?out_trade_no=" .. no, "BAD_RESPONSE")
  end)

  test("BAD_RESPONSE for a truncated 200 body", function()
    local no = order_no("U")
    seed(no)
    fault { fault = "truncate", match = no, method = "GET" }
    expect_code("/query?out_trade_no=" .. no, "BAD_RESPONSE",
      function(r) check(r.message:find("truncated"), "message: %s", r.message) end)
  end)

  test("BAD_RESPONSE for an answer over the body limit (2 MiB > 1 MiB)", function()
    local no = order_no("O")
    seed(no)
    fault { fault = "oversized", match = no, method = "GET" }
    expect_code("/query?out_trade_no=" .. no, "BAD_RESPONSE",
      function(r) check(r.message:find("size limit"), "message: %s", r.message) end)
  end)

  test("an answer with Connection: close works", function()
    local no = order_no("L")
    seed(no)
    fault { fault = "connection_close", match = no }
    expect_ok("/revoke?out_trade_no=" .. no)
    check(sandbox_order(no).trade_state == "REVOKED", "not revoked")
  end)

  test("chunked answers work (through an nginx proxy that re-chunks the sandbox)", function()
    local no = order_no("H")
    seed(no)
    local q = expect_ok("/query?client=proxy&out_trade_no=" .. no)
    check(q.trade_state == "SUCCESS", "query: %s", show(q))
    expect_ok("/revoke?client=proxy&out_trade_no=" .. no)
    q = expect_ok("/query?client=proxy&out_trade_no=" .. no)
    check(q.trade_state == "REVOKED", "query after: %s", show(q))
    local log = read(LOGS .. "/proxy.log") or ""
    check(log:find("GET /v3/global/transactions/out%-trade%-no/" .. no .. "%?[^\n]* 200 te=chunked"),
      "the proxy did not answer chunked:\n%s", log)
  end)

  test("a pooled connection the server dropped is retried once on a fresh one", function()
    local no = order_no("D")
    seed(no)
    expect_ok("/query?out_trade_no=" .. no)          -- leaves a pooled connection
    local s0 = stats()
    fault { fault = "drop", match = no, method = "POST" }
    expect_ok("/revoke?out_trade_no=" .. no)
    local s1 = stats()
    check(s1.requests - s0.requests == 2 and s1.handshakes - s0.handshakes == 1,
      "want 2 requests over 1 new connection: %s -> %s", show(s0), show(s1))
    check(sandbox_order(no).trade_state == "REVOKED", "not revoked")
  end)

  test("NETWORK_ERROR (sent) when the server drops a fresh connection too", function()
    local no = order_no("D")
    seed(no)
    fault { fault = "drop", match = no, method = "POST", count = 2 }
    expect_code("/revoke?out_trade_no=" .. no, "NETWORK_ERROR",
      function(r) check(r.sent == true, "sent: %s", show(r)) end)
  end)

  test("TLS_ERROR (not sent) for a server certificate no trusted CA signed", function()
    expect_code("/revoke?client=untrusted_only&out_trade_no=" .. order_no("X"), "TLS_ERROR",
      function(r) check(r.sent == false, "sent: %s", show(r)) end)
  end)

  test("a TLS failure switches to the backup host (nothing was sent)", function()
    local no = order_no("B")
    seed(no)
    expect_ok("/revoke?client=untrusted&out_trade_no=" .. no)
    check(sandbox_order(no).trade_state == "REVOKED", "not revoked")
  end)

  test("NETWORK_ERROR (not sent) for a refused connection", function()
    expect_code("/revoke?client=refused&out_trade_no=" .. order_no("X"), "NETWORK_ERROR",
      function(r) check(r.sent == false, "sent: %s", show(r)) end)
  end)

  test("NETWORK_ERROR naming the resolver for a host name without `resolver`", function()
    expect_code("/revoke?client=noresolve&out_trade_no=" .. order_no("X"), "NETWORK_ERROR",
      function(r) check(r.sent == false and r.message:find("resolver"), "%s", show(r)) end)
  end)

  test("the client keeps working after all those failures", function()
    local no = order_no("W")
    seed(no)
    expect_ok("/revoke?out_trade_no=" .. no)
    local q = expect_ok("/query?out_trade_no=" .. no)
    check(q.trade_state == "REVOKED", "query: %s", show(q))
  end)

  -- the transport alone, against canned answers (max_body = 64)
  local function transport_case(case)
    local r = get("/transport?case=" .. case)
    check(type(r) == "table", "no JSON answer: %s", show(r))
    return r
  end
  local function transport_ok(case, status, body, more)
    test("transport: " .. case .. " -> " .. status, function()
      local r = transport_case(case)
      check(r.ok and r.res.status == status and r.res.body == body, "%s", show(r))
      if more then more(r.res) end
    end)
  end
  local function transport_err(case, code, sent, pattern)
    test("transport: " .. case .. " -> " .. code, function()
      local r = transport_case(case)
      check(r.ok == false and r.code == code and r.sent == sent, "%s", show(r))
      if pattern then check(r.message:find(pattern), "message: %s", r.message) end
    end)
  end
  transport_ok("continue", 200, "hi", function(res)
    check(res.headers["x-a"] == "1", "headers: %s", show(res.headers))
  end)
  transport_ok("chunked_ext", 200, "abcde")
  transport_ok("close_delimited", 200, "until-close")
  transport_ok("http10", 200, "old")
  transport_ok("no_body_304", 304, "")
  transport_ok("headers", 200, "", function(res)
    check(res.headers["x-folded"] == "a b" and res.headers["x-dup"] == "first"
      and res.headers["X-DUP"] == nil, "headers: %s", show(res.headers))
  end)
  transport_err("conflicting_length", "BAD_RESPONSE", true, "Content%-Length")
  transport_err("bad_status", "BAD_RESPONSE", true, "status line")
  transport_err("bad_header", "BAD_RESPONSE", true, "header")
  transport_err("huge_head", "BAD_RESPONSE", true, "too large")
  transport_err("big_length", "BAD_RESPONSE", true, "size limit")
  transport_err("big_chunked", "BAD_RESPONSE", true, "size limit")
  transport_err("big_to_close", "BAD_RESPONSE", true, "size limit")
  transport_err("bad_chunk", "BAD_RESPONSE", true, "chunk")
  transport_err("cut_chunked", "BAD_RESPONSE", true, "truncated")
  transport_err("gzip_te", "BAD_RESPONSE", true, "Transfer%-Encoding")
  transport_err("nothing", "NETWORK_ERROR", true, "without answering")
  test("transport: an http:// URL -> NETWORK_ERROR, not sent", function()
    local r = get("/transport?url=" .. "http%3A%2F%2Flocalhost%3A1%2Fx")
    check(type(r) == "table" and r.code == "NETWORK_ERROR" and r.sent == false
      and r.message:find("https only"), "%s", show(r))
  end)

  test("cancel of a paid order through nginx: REVOKED", function()
    local no = order_no("P")
    seed(no, "SUCCESS")
    local r = expect_ok("/cancel?out_trade_no=" .. no)
    check(r.state == "REVOKED" and r.confirmed == true and r.attempts == 1, "%s", show(r))
    local o = sandbox_order(no)
    check(o.trade_state == "REVOKED" and o.refunds == 1, "order: %s", show(o))
  end)

  test("cancel of an unpaid order through nginx: CLOSED", function()
    local no = order_no("Q")
    seed(no, "NOTPAY")
    local r = expect_ok("/cancel?out_trade_no=" .. no)
    check(r.state == "CLOSED" and r.confirmed == true, "%s", show(r))
    local o = sandbox_order(no)
    check(o.trade_state == "CLOSED" and o.refunds == 0, "order: %s", show(o))
  end)

  test("cancel retries a SYSTEM_ERROR (backoff with ngx.sleep) and ends REVOKED", function()
    local no = order_no("Y")
    seed(no, "SUCCESS")
    fault { fault = "status", status = 500, code = "SYSTEM_ERROR", match = no, method = "POST" }
    local r = expect_ok("/cancel?out_trade_no=" .. no)
    check(r.state == "REVOKED" and r.attempts == 2, "%s", show(r))
  end)

  test("cancel's 15 s wait after paid_at sleeps with ngx.sleep: /trivial still answers", function()
    local no = order_no("Z")
    seed(no, "SUCCESS")
    local a_out, a_end = TMP .. ".c", TMP .. ".cend"
    os.remove(a_out)
    os.remove(a_end)
    local t0 = now_s()
    os.execute(("(curl -s -m 30 -o %s %s; date +%%s.%%N > %s) > /dev/null 2>&1 &")
      :format(a_out, shq(URL .. "/cancel?paid_ago=14&out_trade_no=" .. no), a_end))
    os.execute("sleep 0.3")
    local _, st, secs = get("/trivial")
    check(st == 200 and secs < 0.3, "/trivial took %s s during cancel's wait", show(secs))
    local done
    for _ = 1, 100 do
      done = tonumber(read(a_end) or "")
      if done then break end
      os.execute("sleep 0.1")
    end
    local r = decode(read(a_out))
    os.remove(a_out)
    os.remove(a_end)
    check(done, "cancel never finished")
    note("cancel wait: cancel took %.3f s, /trivial meanwhile %.3f s", done - t0, secs)
    check(done - t0 >= 0.9, "cancel did not wait (%.3f s)", done - t0)
    check(type(r) == "table" and r.ok and r.state == "REVOKED", "cancel: %s", show(r))
  end)
end

-------------------------------------------------------------------------------
-- The logs, after nginx stopped
-------------------------------------------------------------------------------

-- [error]-or-worse lines that the tests above provoke on purpose.
local EXPECTED = {
  "lua tcp socket read timed out",                    -- TIMEOUT
  "lua ssl certificate verify error",                 -- TLS_ERROR
  "connect%(%) failed %(111: Connection refused%)",   -- the refused port
  "no resolver defined to resolve",                   -- host name without resolver
  "wxpay notification: the handler's callback failed", -- the flaky notification callback
}

local function key_fragments(pem)
  local b64 = pem:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")
  local frags = {}
  for i = 1, #b64 - 24, 24 do frags[#frags + 1] = b64:sub(i, i + 23) end
  return frags
end

local function logs()
  local err_log = read(LOGS .. "/error.log") or ""

  test("nginx wrote an error log", function()
    check(#err_log > 0, "%s/error.log is empty or missing", LOGS)
  end)

  test("no [error]/[alert]/[crit]/[emerg] lines but the expected ones", function()
    local bad, seen = {}, {}
    for line in err_log:gmatch("[^\n]+") do
      if line:find("%[error%]") or line:find("%[alert%]") or line:find("%[crit%]")
        or line:find("%[emerg%]") then
        local known
        for i, pat in ipairs(EXPECTED) do
          if line:find(pat) then known = i; seen[i] = (seen[i] or 0) + 1 end
        end
        if not known then bad[#bad + 1] = line end
      end
    end
    for i, pat in ipairs(EXPECTED) do note("expected error lines %q: %d", pat, seen[i] or 0) end
    check(#bad == 0, "%d unexpected line(s):\n%s", #bad, table.concat(bad, "\n"))
  end)

  test("no Lua errors in the log", function()
    check(not err_log:find("runtime error", 1, true) and not err_log:find("LUA_ERROR", 1, true)
      and not err_log:find("stack traceback", 1, true), "a Lua error was logged")
  end)

  test("the libcurl-forced warning is logged once, at [warn]", function()
    local n, warn = 0, false
    for line in err_log:gmatch("[^\n]+") do
      if line:find("libcurl forced", 1, true) then
        n = n + 1
        warn = line:find("%[warn%]") ~= nil
      end
    end
    check(n == 1 and warn, "seen %d time(s)", n)
  end)

  test("no key material in any nginx log", function()
    local all = err_log .. (read(LOGS .. "/access.log") or "") .. (read(LOGS .. "/proxy.log") or "")
      .. (read(LOGS .. "/stdout.log") or "")
    check(not all:find("PRIVATE KEY", 1, true), "a PEM private key header was logged")
    check(not all:find(SB.apiv3_key, 1, true), "the APIv3 key was logged")
    for _, path in ipairs { SB.private_key, SB.dir .. "/creds/platform_key.pem" } do
      for _, frag in ipairs(key_fragments(assert(read(path)))) do
        check(not all:find(frag, 1, true), "a fragment of %s was logged", path)
      end
    end
  end)
end

local mode = arg[1] or "run"
if mode == "run" then
  run()
  require("nginx.notify_tests") { test = test, check = check, show = show, note = note, control = control,
    stats = stats, seed = seed, sh = sh, read = read, decode = decode, shq = shq, URL = URL, order_no = order_no }
elseif mode == "logs" then
  logs()
else
  error("usage: driver.lua run|logs")
end
os.remove(TMP)
print(("counts: %d %d"):format(passed, failed))
