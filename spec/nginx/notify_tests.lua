--- The nginx suite's notification tests (issue 15), run by driver.lua: the
-- sandbox POSTs real signed, encrypted notifications to examples/notify_nginx.lua
-- (and its variants in notify_app.lua) inside the real nginx.
-- t: the driver's harness {test, check, show, note, control, stats, seed, sh, read, decode, shq, URL}.
return function(t)
  local test, check, show, note = t.test, t.check, t.show, t.note
  local control, stats, sh, decode, shq, URL = t.control, t.stats, t.sh, t.decode, t.shq, t.URL

  local function order_no(p) return t.order_no(p) end

  -- the sandbox's tries for one notification id, waiting until one is acked (or `want` tries)
  local function tries_of(id, want, max_s)
    local list = {}
    for _ = 1, (max_s or 10) * 10 do
      local _, log = control("GET", "/notify/log")
      list = {}
      for _, e in ipairs(type(log) == "table" and log or {}) do
        if e.id == id then list[#list + 1] = e end
      end
      local last = list[#list]
      if (want and #list >= want) or (not want and last and (last.status == 204 or last.status == 200)) then
        break
      end
      os.execute("sleep 0.1")
    end
    return list
  end

  local function notified(key, id)
    local out = sh(("curl -s -m 10 %s"):format(shq(URL .. "/wx/notified?key=" .. (key or "")
      .. "&id=" .. (id or ""))))
    return decode(out) or {}
  end

  -- POST /notify/send: one notification, sent once to `path` on nginx, waited for
  local function send(path, spec)
    spec.url = URL .. path
    spec.event_type = spec.event_type or "TRANSACTION.SUCCESS"
    local st, r = control("POST", "/notify/send", spec)
    check(st == 200 and type(r) == "table", "notify/send: %s %s", tostring(st), show(r))
    return r
  end

  local function statuses(list)
    local s = {}
    for i, e in ipairs(list) do s[i] = e.status and ("%d"):format(e.status) or "none" end
    return table.concat(s, ",")
  end

  test("notification: paying an order sends TRANSACTION.SUCCESS; the example records it, answers 204", function()
    control("POST", "/reset")
    local no = order_no("NP")
    t.seed(no, "NOTPAY")
    local st = control("POST", "/notify", { url = URL .. "/wx/notify" })
    check(st == 200, "POST /notify: %s", tostring(st))
    local before = stats()
    local pst, paid = control("POST", "/orders/" .. no .. "/pay")
    check(pst == 200 and paid.notification, "pay: %s %s", tostring(pst), show(paid))
    local id = paid.notification.id
    local list = tries_of(id)
    check(#list == 1 and list[1].status == 204, "tries: %s", show(list))
    local rec = notified("paid:" .. no).record
    check(type(rec) == "table" and rec.trade_state == "SUCCESS" and rec.notification_id == id
      and type(rec.transaction_id) == "string" and rec.total == 100, "recorded: %s", show(rec))
    local after = stats()
    check(after.notifications == before.notifications + 1
      and after.notification_attempts == before.notification_attempts + 1
      and after.notification_acks == before.notification_acks + 1,
      "stats before %s after %s", show(before), show(after))
  end)

  test("notification: a failing callback gets a FAIL answer and the sandbox retries until recorded", function()
    control("POST", "/reset")
    local no = order_no("NF")
    t.seed(no, "NOTPAY")
    control("POST", "/notify", { url = URL .. "/wx/notify_flaky?fail=2", retries = { 0.2, 0.3, 0.5 } })
    local before = stats()
    local _, paid = control("POST", "/orders/" .. no .. "/pay")
    local id = paid.notification.id
    local list = tries_of(id)
    check(statuses(list) == "500,500,204", "statuses %s", statuses(list))
    local n = notified("paid:" .. no, id)
    check(type(n.record) == "table" and n.record.notification_id == id, "recorded: %s", show(n))
    local d = n.deliveries
    check(#d == 3 and d[1].seen == false and d[2].seen == true and d[3].seen == true,
      "deliveries (seen flags through the shared dict): %s", show(d))
    local after = stats()
    check(after.notification_attempts == before.notification_attempts + 3
      and after.notification_acks == before.notification_acks + 1
      and after.notifications == before.notifications + 1, "stats %s -> %s", show(before), show(after))
    -- the failure answer itself
    local r = send("/wx/notify_flaky?fail=1", { resource = { out_trade_no = order_no("NG") } })
    local a = decode(r.answer)
    check(r.status == 500 and type(a) == "table" and a.code == "FAIL"
      and a.message == "the merchant could not record the notification", "answer %s", show(r))
  end)

  test("notification: a large body nginx buffered to a temp file still verifies", function()
    local no = order_no("NL")
    local r = send("/wx/notify_small", { resource = { out_trade_no = no, trade_state = "SUCCESS",
      padding = ("p"):rep(20000) } })
    check(r.status == 204 and r.answer == "", "status %s: %s", tostring(r.status), tostring(r.answer))
    check(#r.body > 20000, "body of %d bytes", #r.body)
    local n = notified("paid:" .. no, r.id)
    check(#n.deliveries == 1 and n.deliveries[1].body_file == true, "deliveries %s", show(n.deliveries))
    check(type(n.record) == "table" and n.record.notification_id == r.id, "record %s", show(n.record))
  end)

  test("notification: the same id again (a retry after a lost answer) is accepted, seen, recorded once", function()
    local no, id = order_no("ND"), "dup-" .. order_no("ID")
    local r1 = send("/wx/notify_small", { id = id, resource = { out_trade_no = no, trade_state = "SUCCESS" } })
    local r2 = send("/wx/notify_small", { id = id, resource = { out_trade_no = no, trade_state = "SUCCESS" } })
    check(r1.status == 204 and r2.status == 204, "statuses %s %s", tostring(r1.status), tostring(r2.status))
    local n = notified("paid:" .. no, id)
    check(#n.deliveries == 2 and n.deliveries[1].seen == false and n.deliveries[2].seen == true,
      "deliveries %s", show(n.deliveries))
  end)

  test("notification: forged, stale, other-key, wrong-AAD, not-JSON, header-less: FAIL, nothing recorded", function()
    local want = { bad_signature = 401, other_key = 401, stale = 401, no_headers = 401,
      unknown_serial = 401, wrong_aad = 400, other_apiv3_key = 400, not_json_body = 400,
      wrong_algorithm = 400, plaintext_not_json = 400 }
    for mutate, code in pairs(want) do
      local no = order_no("NX")
      local r = send("/wx/notify", { mutate = mutate, resource = { out_trade_no = no,
        secret_marker = "MARKER-" .. no } })
      local a = decode(r.answer)
      check(r.status == code and type(a) == "table" and a.code == "FAIL" and type(a.message) == "string",
        "%s: want %d FAIL, got %s %s", mutate, code, tostring(r.status), tostring(r.answer))
      check(not r.answer:find("MARKER", 1, true), "%s: the answer shows the resource", mutate)
      check(notified("paid:" .. no).record == nil, "%s: recorded anyway", mutate)
    end
  end)

  test("notification: a repeated Wechatpay-Serial header: equal copies accepted, two serials 401", function()
    local function post(n, extra_header)
      local bodyf = os.tmpname()
      local f = assert(io.open(bodyf, "wb"))
      f:write(n.body)
      f:close()
      local hs = {}
      for k, v in pairs(n.headers) do
        if k ~= "Host" and k ~= "Content-Length" then hs[#hs + 1] = "-H " .. shq(k .. ": " .. v) end
      end
      hs[#hs + 1] = "-H " .. shq(extra_header)
      local out = sh(("curl -s -m 10 -w '\\n%%{http_code}' %s --data-binary @%s %s")
        :format(table.concat(hs, " "), bodyf, shq(URL .. "/wx/notify")))
      os.remove(bodyf)
      local body, status = out:match("^(.*)\n(%d+)$")
      return tonumber(status), body
    end
    local function build(no)
      local st, n = control("POST", "/notify/send", { event_type = "TRANSACTION.SUCCESS", deliver = false,
        resource = { out_trade_no = no, trade_state = "SUCCESS" } })
      check(st == 200 and type(n) == "table", "notify/send: %s", show(n))
      return n
    end
    local no1, no2 = order_no("NH"), order_no("NH")
    local n1 = build(no1)
    local status, body = post(n1, "Wechatpay-Serial: " .. n1.headers["Wechatpay-Serial"])
    check(status == 204 and body == "", "equal copies: %s %s", tostring(status), tostring(body))
    check(type(notified("paid:" .. no1).record) == "table", "equal copies: not recorded")
    local n2 = build(no2)
    status, body = post(n2, "Wechatpay-Serial: " .. ("0"):rep(40))
    local a = decode(body)
    check(status == 401 and type(a) == "table" and a.code == "FAIL", "two serials: %s %s", tostring(status),
      tostring(body))
    check(notified("paid:" .. no2).record == nil, "two serials: recorded anyway")
  end)

  test("notification: a body over max_body_bytes gets 413 FAIL; a GET 405", function()
    local big = os.tmpname()
    local f = assert(io.open(big, "wb"))
    f:write('{"id":"x","pad":"', ("b"):rep(1200 * 1024), '"}')
    f:close()
    local out = sh(("curl -s -m 20 -w '\\n%%{http_code}' -H 'Content-Type: application/json' "
      .. "-H 'Wechatpay-Serial: X' --data-binary @%s %s"):format(big, shq(URL .. "/wx/notify_small")))
    os.remove(big)
    local body, status = out:match("^(.*)\n(%d+)$")
    local a = decode(body)
    check(status == "413" and type(a) == "table" and a.code == "FAIL", "oversized: %s %s",
      tostring(status), tostring(body))
    out = sh(("curl -s -m 10 -w '\\n%%{http_code}' %s"):format(shq(URL .. "/wx/notify")))
    body, status = out:match("^(.*)\n(%d+)$")
    a = decode(body)
    check(status == "405" and type(a) == "table" and a.code == "FAIL", "GET: %s %s", tostring(status),
      tostring(body))
    note("notification: sandbox stats %s", show(stats()))
  end)
end
