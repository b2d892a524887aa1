-- A point-of-sale script: the payment call for a quick-pay order failed or
-- timed out, so make sure the customer is not charged (README "POS script").
-- make test runs it against a sandbox (tools/with-sandbox sets WXPAY_SANDBOX).
local cjson = require "cjson"
local wxpay = require "wxpay"

local f = assert(io.open(assert(os.getenv("WXPAY_SANDBOX"))))
local sb = cjson.decode(f:read("*a"))
f:close()

-- merchant.json as a merchant would keep it (paths relative to the file)
local dir = sb.dir .. "/pos"
os.execute("mkdir -p " .. dir)
local cfg = assert(io.open(dir .. "/merchant.json", "w"))
cfg:write(cjson.encode {
  mchid = sb.mchid, serial_no = sb.serial_no, private_key = sb.private_key,
  platform_certs = { sb.platform_cert }, base_url = sb.base_url, ca_file = sb.ca_file,
})
cfg:close()

-- the sandbox stands in for a customer whose payment went through after all
local order_no = "POS-" .. os.time()
os.execute(("curl -s -o /dev/null -X POST -d '{\"out_trade_no\":\"%s\",\"trade_state\":\"SUCCESS\"}' %s/orders")
  :format(order_no, sb.control_url))

-------------------------------------------------------------------------------
local client = assert(wxpay.new(dir .. "/merchant.json"))

local paid_at = os.time() - 20            -- when the payment call was made
local state, info = client:cancel { out_trade_no = order_no, paid_at = paid_at, deadline_ms = 30000 }
if state == "REVOKED" then
  print(order_no .. ": payment reversed, the customer was refunded")
elseif state == "CLOSED" then
  print(order_no .. ": order closed, the customer was never charged")
else
  local err = info
  print(order_no .. ": could not cancel: " .. tostring(err))
  print("  advice: " .. wxpay.errors.info(err.code).action)
  os.exit(1)
end
client:close()
assert(state == "REVOKED")
