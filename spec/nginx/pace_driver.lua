--- Driver of the nginx-pace suite (tools/suites/nginx-pace.sh), Lua 5.4 + the
-- curl CLI: N revokes of one merchant fired at once at an nginx with two
-- workers that share the pace through a lua_shared_dict. Ends with the line
-- "nginx-pace: N passed, N failed".
-- Environment: WXPAY_NGINX_URL, WXPAY_SANDBOX_JSON, WXPAY_PACE_N, WXPAY_PACE_RATE, WXPAY_PACE_DIR.
local cjson = require "cjson"

local url, sbjson = assert(os.getenv("WXPAY_NGINX_URL")), assert(os.getenv("WXPAY_SANDBOX_JSON"))
local n, rate = tonumber(os.getenv("WXPAY_PACE_N") or "40"), tonumber(os.getenv("WXPAY_PACE_RATE") or "20")
local dir = assert(os.getenv("WXPAY_PACE_DIR"))

package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
local H = require "helpers"
local read, sh = H.read, H.sh

local sb = cjson.decode(assert(read(sbjson)))
local passed, failed = 0, 0
local function test(name, cond, detail)
  if cond then
    passed = passed + 1
    print("ok   " .. name)
  else
    failed = failed + 1
    print("FAIL " .. name .. (detail and (": " .. detail) or ""))
  end
end

-- N paid orders
local prefix = ("NP%d_"):format(os.time() % 1000000)
local out, ok = sh(("/usr/bin/python3 bench/seed.py '%s' '%s' %d '%s' 2>&1")
  :format(sb.control_url, prefix, n, sb.mchid))
assert(ok, "seeding failed: " .. out)

-- all at once
local t0 = os.time() - 1
sh(("for i in $(seq 1 %d); do curl -s -m 30 '%s/revoke?out_trade_no=%s'$i > '%s/out.'$i & done; wait")
  :format(n, url, prefix, dir))
local good, pids, first = 0, {}, nil
for i = 1, n do
  local r = cjson.decode(read(dir .. "/out." .. i) or "null")
  if type(r) == "table" and r.ok then
    good = good + 1
  else
    first = first or (read(dir .. "/out." .. i) or "no answer")
  end
  if type(r) == "table" and r.pid then pids[r.pid] = true end
end
local workers = 0
for _ in pairs(pids) do workers = workers + 1 end
test(("all %d revokes true"):format(n), good == n, first)
test("both workers revoked", workers == 2, ("%d worker(s) answered"):format(workers))

-- when they reached the sandbox
sh(("curl -s -m 10 '%s/requests' > '%s/requests.json'"):format(sb.control_url, dir))
local rq = cjson.decode(read(dir .. "/requests.json") or "[]")
local t = {}
for _, r in ipairs(rq) do
  if r.method == "POST" and r.target:find(prefix, 1, true) and r.time >= t0 then t[#t + 1] = r.time end
end
table.sort(t)
local most = 0
for i = 1, #t do
  local j = i
  while j < #t and t[j + 1] - t[i] < 1 do j = j + 1 end
  if j - i + 1 > most then most = j - i + 1 end
end
local interval = 1.02 / rate
local span = #t > 1 and t[#t] - t[1] or 0
print(("nginx-pace: %d revokes over %.3f s (one pace at %g/s: >= %.3f s), at most %d in one second")
  :format(#t, span, rate, (n - 1) * interval, most))
test("the sandbox got every revoke", #t == n, ("%d of %d"):format(#t, n))
test(("at most %d + 1 in any second (one pace, not one per worker)"):format(rate), most <= rate + 1,
  ("%d in one second"):format(most))
-- two workers pacing alone would need half the time; the first arrivals can lag by a
-- worker's TLS handshake, so 75 % of one pace's time is what separates the two surely
test("spread over one pace's time, not half of it", span >= 0.75 * (n - 1) * interval,
  ("%.3f s"):format(span))

-- the dict holds pace slot markers and answer nonces (replay refusal), nothing else
local d = cjson.decode((sh(("curl -s -m 10 '%s/dict'"):format(url))))
local only, slots = #d.keys > 0, 0
for i, k in ipairs(d.keys) do
  if k:match("^wxpay:pace:%d+:[%d.]+:%w+$") and (d.types[i] == "boolean" or d.types[i] == "number") then
    slots = slots + 1
  elseif not (k:match("^wxpay:nonce:%x+:%w+$") and d.types[i] == "boolean") then
    only = false
  end
end
test("the shared dict holds only pace slot markers and answer nonces", only and slots > 0, cjson.encode(d.keys))

-- revoke_many on light threads: a raising progress callback
local bp = ("NB%d_"):format(os.time() % 1000000)
out, ok = sh(("/usr/bin/python3 bench/seed.py '%s' '%s' %d '%s' 2>&1"):format(sb.control_url, bp, 9, sb.mchid))
assert(ok, "seeding failed: " .. out)
local br = cjson.decode((sh(("curl -s -m 30 '%s/batch_raise?prefix=%s&n=8'"):format(url, bp))))
sh(("curl -s -m 10 '%s/requests' > '%s/requests.json'"):format(sb.control_url, dir))
local sent = 0
for _, r in ipairs(cjson.decode(read(dir .. "/requests.json") or "[]")) do
  if r.method == "POST" and r.target:find(bp, 1, true) and not r.target:find(bp .. "9", 1, true)
    and not r.target:find("NEVER", 1, true) then sent = sent + 1 end
end
test("threads: the progress callback's error reaches the caller", br.raised == "progress stops here",
  tostring(br.raised))
test("threads: no item is taken after it (4 threads, 8 items)", sent <= 4, ("%d sent"):format(sent))
test("threads: the next batch gets its own answers", type(br.second) == "table"
  and br.second[1] == "ORDER_NOT_EXIST" and br.second[2] == true, cjson.encode(br.second))

print(("counts: %d %d"):format(passed, failed))
