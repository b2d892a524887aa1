-- make demo: a real revoke against the bundled sandbox.
-- Run by tools/with-sandbox, which starts a sandbox and sets WXPAY_SANDBOX to
-- its sandbox.json (ids, serials, key paths, URLs).
local cjson = require "cjson"
local wxpay = require "wxpay"

local sandbox_json = assert(os.getenv("WXPAY_SANDBOX"), "run me through make demo")
local f = assert(io.open(sandbox_json))
local sb = cjson.decode(f:read("*a"))
f:close()

-- the sandbox's control endpoint stands in for a customer paying (or not)
local function control(method, path, body)
  local cmd = ("curl -s -X %s %s '%s%s'"):format(method,
    body and ("-H 'Content-Type: application/json' -d '" .. cjson.encode(body) .. "'") or "",
    sb.control_url, path)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return cjson.decode(out)
end

local client = assert(wxpay.new {
  mchid = sb.mchid,
  serial_no = sb.serial_no,
  private_key = sb.private_key,        -- apiclient_key.pem
  platform_certs = { sb.platform_cert },
  base_url = sb.base_url,              -- https://apihk.mch.weixin.qq.com in production
  ca_file = sb.ca_file,
})
print("client:  " .. tostring(client))

local stamp = os.time()
local paid = control("POST", "/orders", { out_trade_no = "DEMO-PAID-" .. stamp, trade_state = "SUCCESS" })
local unpaid = control("POST", "/orders", { out_trade_no = "DEMO-UNPAID-" .. stamp, trade_state = "NOTPAY" })

for _, o in ipairs { paid, unpaid } do
  local ok, err = client:revoke { out_trade_no = o.out_trade_no }
  assert(ok, tostring(err))
  local order = assert(client:query { out_trade_no = o.out_trade_no })
  print(("revoke  %-24s was %-8s -> %s (%s)"):format(o.out_trade_no, o.trade_state, order.trade_state,
    order.trade_state == "REVOKED" and "the customer was refunded" or "the customer was never charged"))
  assert(order.trade_state == (o.trade_state == "SUCCESS" and "REVOKED" or "CLOSED"))
end

-- cancel does the whole dance: revoke, retry what is retryable, confirm by query
local state = assert(client:cancel { out_trade_no = paid.out_trade_no })
print(("cancel  %-24s -> %s"):format(paid.out_trade_no, state))

-- and what a failure looks like
local ok, err = client:revoke { out_trade_no = "DEMO-NEVER-MADE" }
assert(not ok and err.code == wxpay.errors.ORDER_NOT_EXIST)
print("error:   " .. tostring(err))
client:close()
print("demo: done")
