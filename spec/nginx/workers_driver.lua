--- The nginx suite's second run (4 workers, shared_dict): certificates shared
-- between workers (issue 14).  Run by tools/suites/nginx.sh:
--
--   lua5.4 spec/nginx/workers_driver.lua run    against the running nginx
--   lua5.4 spec/nginx/workers_driver.lua logs   its logs, after it stopped
--
-- Environment: WXPAY_NGINX_URL, WXPAY_SANDBOX_JSON, WXPAY_NGINX_LOGS.
-- Prints "ok - NAME" / "not ok - NAME: why", and last "counts: PASSED FAILED".
package.path = "./spec/?.lua;./lua/?.lua;./lua/?/init.lua;" .. package.path
local cjson = require "cjson"
local H = require "helpers"

local URL = assert(os.getenv("WXPAY_NGINX_URL"), "WXPAY_NGINX_URL is not set")
local LOGS = assert(os.getenv("WXPAY_NGINX_LOGS"))
local sandbox = H.attach(assert(os.getenv("WXPAY_SANDBOX_JSON")))
local SB = sandbox.cfg
local read, sh = H.read, H.sh
local TMP = os.tmpname()

local passed, failed = 0, 0
local function check(cond, fmt, ...)
  if not cond then error({ why = (fmt or "check failed"):format(...) }, 2) end
end
local function show(v) return type(v) == "table" and cjson.encode(v) or tostring(v) end
local function test(name, fn)
  local ok, err = pcall(fn)
  if ok then passed = passed + 1; print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name .. ": " .. (type(err) == "table" and err.why or tostring(err)))
  end
end
local function note(fmt, ...) print("# " .. fmt:format(...)) end

local function decode(text)
  local ok, v = pcall(cjson.decode, text or "")
  return ok and v or nil
end

local function get(path)
  os.remove(TMP)
  local out = sh(("curl -s -m 30 -o %s -w '%%{http_code}' '%s%s'"):format(TMP, URL, path))
  local body = read(TMP) or ""
  return decode(body) or body, tonumber(out)
end

--- n requests at once (curl --parallel): the decoded answers
local function parallel(paths)
  local args = {}
  for i, p in ipairs(paths) do args[#args + 1] = ("-o %s.%d '%s%s'"):format(TMP, i, URL, p) end
  sh(("curl -s -m 60 -Z --parallel-max %d %s 2>/dev/null"):format(#paths, table.concat(args, " ")))
  local out = {}
  for i = 1, #paths do
    out[i] = decode(read(TMP .. "." .. i)) or "(no answer)"
    os.remove(TMP .. "." .. i)
  end
  return out
end

local function stats() return sandbox:stats() end

local seq = 0
local function order_no(prefix)
  seq = seq + 1
  return ("%s%d%05d%03d"):format(prefix, os.time() % 100000, math.random(0, 99999), seq)
end

local function seed(no) return sandbox:order { out_trade_no = no, trade_state = "SUCCESS" } end

local function run()
  math.randomseed(os.time())

  test("shared_dict naming no lua_shared_dict: CONFIG_ERROR; without apiv3_key: no certificate store", function()
    local r = get("/boot")
    check(type(r) == "table" and r.ok, "%s", show(r))
    local b = r.boot
    check(type(b.bad_dict) == "table" and b.bad_dict.code == "CONFIG_ERROR"
      and b.bad_dict.message:find("lua_shared_dict no_such_dict", 1, true), "bad dict: %s", show(b.bad_dict))
    check(type(b.no_apiv3) == "table" and b.no_apiv3.accepted == true and b.no_apiv3.cert_stores == false,
      "no apiv3_key: %s", show(b.no_apiv3))
  end)

  local no = order_no("W")
  seed(no)

  test("4 workers, 40 requests at once, each worker's first call: 1 certificate download", function()
    local s0 = stats()
    local paths = {}
    for i = 1, 40 do paths[i] = "/query?out_trade_no=" .. no end
    local answers = parallel(paths)
    local s1 = stats()
    local pids, npids, oks = {}, 0, 0
    for i, a in ipairs(answers) do
      check(type(a) == "table", "answer %d: %s", i, show(a))
      if a.ok and a.trade_state == "SUCCESS" then oks = oks + 1 end
      local pid = "pid " .. tostring(a.pid)
      if not pids[pid] then pids[pid] = 0; npids = npids + 1 end
      pids[pid] = pids[pid] + 1
    end
    local d = s1.downloads - s0.downloads
    local nproc = (sh("nproc"):gsub("%s", ""))
    note("shared_dict: 40 requests over %d worker(s) %s -> %d download(s), %d ok (nproc %s)",
      npids, show(pids), d, oks, nproc)
    check(oks == 40, "%d of 40 succeeded: %s", oks, show(answers))
    check(npids >= 2, "the requests reached only %d worker(s)", npids)
    check(d == 1, "%d downloads, want 1", d)
  end)

  test("40 more requests: no download (every worker trusts what it adopted)", function()
    local s0 = stats()
    local paths = {}
    for i = 1, 40 do paths[i] = "/query?out_trade_no=" .. no end
    for i, a in ipairs(parallel(paths)) do check(type(a) == "table" and a.ok, "answer %d: %s", i, show(a)) end
    check(stats().downloads == s0.downloads, "downloaded again")
  end)

  test("a replayed answer is refused by whichever worker it reaches (nonces claimed in the dict)", function()
    local crossed, tries = 0, 0
    for _ = 1, 20 do
      tries = tries + 1
      local a = get("/query?out_trade_no=" .. no)      -- an honest answer, verified by some worker
      check(type(a) == "table" and a.ok, "honest answer: %s", show(a))
      sandbox:fault { fault = "replay", method = "GET", match = no }
      local b = get("/query?out_trade_no=" .. no)      -- the same bytes again, to any worker
      check(type(b) == "table" and b.ok == false and b.code == "BAD_SIGNATURE"
        and tostring(b.message):find("replayed", 1, true), "a replay was accepted: %s", show(b))
      if b.pid ~= a.pid then crossed = crossed + 1 end
      if crossed >= 3 then break end
    end
    -- without the dict a replay reaching another worker would pass: see it happen
    check(crossed >= 1, "no replay reached another worker in %d tries", tries)
    note("%d of %d replays reached another worker than the original answer; all refused", crossed, tries)
    local d = get("/dict")
    local nonces = 0
    for k in pairs(d.items or {}) do if k:find("^wxpay:nonce:") then nonces = nonces + 1 end end
    check(nonces >= tries, "%d nonce entries in the dict for %d honest answers", nonces, tries)
  end)

  test("a fresh client with the dict loads the shared download: no download", function()
    local s0 = stats()
    local r = get("/fresh?out_trade_no=" .. no)
    check(type(r) == "table" and r.ok, "%s", show(r))
    check(stats().downloads == s0.downloads, "downloaded again")
    check(r.certificates[1] and r.certificates[1].source == "download", "%s", show(r.certificates))
  end)

  test("the dict holds the encrypted download: no key, no private key, no decrypted certificate", function()
    local r = get("/dict")
    check(type(r) == "table" and r.ok, "%s", show(r))
    local all, n = {}, 0
    for k, v in pairs(r.items) do n = n + 1; all[#all + 1] = k .. "=" .. tostring(v) end
    all = table.concat(all, "\n")
    check(n >= 1 and all:find("ciphertext", 1, true), "no record: %s", all)
    check(not all:find(SB.apiv3_key, 1, true), "the APIv3 key is in the dict")
    check(not all:find("PRIVATE KEY", 1, true) and not all:find("BEGIN CERTIFICATE", 1, true),
      "PEM text in the dict")
    for _, frag in ipairs(H.key_fragments(SB.private_key)) do
      check(not all:find(frag, 1, true), "a fragment of the private key is in the dict")
    end
  end)

  test("20 light threads' first calls on one fresh client: 1 download, all 20 succeed", function()
    local s0 = stats()
    local r = get("/threads?n=20&out_trade_no=" .. no)
    local d = stats().downloads - s0.downloads
    note("light threads: 20 first calls on one client -> %d download(s), results %s", d,
      type(r) == "table" and show(r.results) or show(r))
    check(type(r) == "table" and r.ok and #r.results == 20, "%s", show(r))
    check(d == 1, "%d downloads, want 1", d)
  end)

  test("shared_dict and cache_dir together: the dict first, a new download kept in both", function()
    local s0 = stats()
    local r = get("/fresh?both=1&out_trade_no=" .. no)                 -- from the dict
    check(type(r) == "table" and r.ok, "%s", show(r))
    check(stats().downloads == s0.downloads, "downloaded although the dict had a record")
    check(type(get("/plant?kind=delete")) == "table", "delete")
    r = get("/fresh?both=1&out_trade_no=" .. no)                       -- empty dict, empty dir
    check(type(r) == "table" and r.ok, "%s", show(r))
    check(stats().downloads == s0.downloads + 1, "want one download")
    check(type(get("/plant?kind=delete")) == "table", "delete")
    r = get("/fresh?both=1&out_trade_no=" .. no)                       -- from the directory
    check(type(r) == "table" and r.ok, "%s", show(r))
    check(stats().downloads == s0.downloads + 1, "the directory did not keep the download")
    r = get("/fresh?out_trade_no=" .. no)                              -- nor the dict
    check(type(r) == "table" and r.ok, "%s", show(r))
    check(stats().downloads == s0.downloads + 2, "want one more download after the dict was emptied")
  end)

  for _, kind in ipairs { "body", "garbage", "future" } do
    test("a spoiled dict record (" .. kind .. ") is refused with a warning, then one fresh download", function()
      local p = get("/plant?kind=" .. kind)
      check(type(p) == "table" and p.ok, "plant: %s", show(p))
      local s0 = stats()
      local r = get("/fresh?out_trade_no=" .. no)
      check(type(r) == "table" and r.ok and r.trade_state == "SUCCESS", "%s", show(r))
      check(stats().downloads - s0.downloads == 1, "downloads: %d", stats().downloads - s0.downloads)
      -- the fresh download replaced the spoiled record: the next fresh client loads it
      s0 = stats()
      r = get("/fresh?out_trade_no=" .. no)
      check(type(r) == "table" and r.ok, "%s", show(r))
      check(stats().downloads == s0.downloads, "the good record was not saved back")
    end)
  end
end

local function key_fragments(path) return H.key_fragments(path) end

local function logs()
  local err_log = read(LOGS .. "/error.log") or ""
  test("the spoiled records were logged as warnings, once each", function()
    local n = 0
    for line in err_log:gmatch("[^\n]+") do
      if line:find("ignoring the saved certificates in shared_dict wxpay_certs", 1, true) then
        check(line:find("%[warn%]"), "not at [warn]: %s", line)
        n = n + 1
      end
    end
    check(n == 3, "%d warning line(s), want 3", n)
  end)
  test("no [error]/[alert]/[crit]/[emerg] lines and no Lua errors", function()
    for line in err_log:gmatch("[^\n]+") do
      check(not (line:find("%[error%]") or line:find("%[alert%]") or line:find("%[crit%]")
        or line:find("%[emerg%]")), "%s", line)
    end
    check(not err_log:find("stack traceback", 1, true) and not err_log:find("LUA_ERROR", 1, true), "a Lua error")
  end)
  test("no key material in the logs", function()
    local all = err_log .. (read(LOGS .. "/access.log") or "")
    check(not all:find(SB.apiv3_key, 1, true) and not all:find("PRIVATE KEY", 1, true), "key logged")
    for _, frag in ipairs(key_fragments(SB.private_key)) do
      check(not all:find(frag, 1, true), "key fragment logged")
    end
  end)
end

local mode = arg[1] or "run"
if mode == "run" then run() elseif mode == "logs" then logs() else error("usage: workers_driver.lua run|logs") end
os.remove(TMP)
print(("counts: %d %d"):format(passed, failed))
