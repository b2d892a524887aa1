--- `wxpay --sandbox` and `--seed`, from a source checkout only: starts the
-- checkout's sandbox (sandbox/ctl) for one command and seeds its order.
-- bin/wxpay finds this file beside sandbox/ctl; installed copies of the
-- library do not ship it.  Must not: run outside a checkout, or leave the
-- sandbox (or its generated keys) behind.
local cjson = require "cjson.safe"
local util = require "wxpay.util"
local output = require "wxpay.cli.output"

local fail, exists, shell_quote, json_encode = output.fail, output.exists, output.shell_quote,
  output.json_encode
local sh = output.sh
local EXIT_USAGE, EXIT_API = output.EXIT_USAGE, output.EXIT_API

local Sandbox = {}

function Sandbox.start(self)
  local root = self.root
  local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/wxpay-cli-sandbox.XXXXXX\""):gsub("%s+$", "")
  if dir == "" or not dir:find("/wxpay-cli-sandbox.", 1, true) then
    fail(EXIT_API, "SANDBOX_ERROR", "cannot make a temporary directory for the sandbox")
  end
  self.sandbox_dir = dir
  -- Making the sandbox's keys takes seconds: keep one set in the checkout's
  -- (git-ignored) .sandbox/cli-creds and start from a copy of it.
  local cache = root .. "/.sandbox/cli-creds"
  local cached = exists(cache .. "/apiv3_key.txt")
    and select(2, sh(("cp -a %s %s/creds 2>/dev/null"):format(shell_quote(cache), shell_quote(dir))))
  local ctl = ("%s start %s 2>&1"):format(shell_quote(root .. "/sandbox/ctl"), shell_quote(dir))
  local out, ok = sh(ctl)
  if not ok and cached then   -- a stale cache: start afresh
    sh(("rm -rf -- %s/creds %s"):format(shell_quote(dir), shell_quote(cache)))
    out, ok = sh(ctl)
    cached = false
  end
  if ok and not cached then
    local tmp = cache .. "." .. tostring(os.time()) .. tostring(math.random(1000, 9999))
    sh(("mkdir -p %s && cp -a %s/creds %s 2>/dev/null && mv -T %s %s 2>/dev/null; rm -rf -- %s")
      :format(shell_quote(root .. "/.sandbox"), shell_quote(dir), shell_quote(tmp), shell_quote(tmp),
        shell_quote(cache), shell_quote(tmp)))
  end
  local text = util.read_file(dir .. "/sandbox.json")
  local cfg = ok and text and cjson.decode(text)
  if type(cfg) ~= "table" then
    fail(EXIT_API, "SANDBOX_ERROR", "the sandbox did not start: " .. out:gsub("%s+$", ""))
  end
  self.sandbox = cfg
  self:secret(cfg.apiv3_key)
  if self.args.verbose then self:err("wxpay: sandbox started at ", cfg.base_url, " (", dir, ")\n") end
  return cfg
end

function Sandbox.stop(self)
  local dir = self.sandbox_dir
  if not dir then return end
  self.sandbox_dir = nil
  -- ctl stop kills the server by the PID recorded in sandbox.json
  sh(("%s stop %s >/dev/null 2>&1"):format(shell_quote(self.root .. "/sandbox/ctl"), shell_quote(dir)))
  sh("rm -rf -- " .. shell_quote(dir))
end

-- Creates the order in the sandbox through its control endpoint (curl CLI).
function Sandbox.seed(self, a, opts)
  local sb = self.sandbox
  local order = { out_trade_no = a.out_trade_no, transaction_id = a.transaction_id, trade_state = a.seed }
  if not order.out_trade_no then order.out_trade_no = ("SEED%d%04d"):format(os.time(), math.random(0, 9999)) end
  if a.paid_at then order.created_at = a.paid_at end
  if opts.sp_mchid then
    order.sp_mchid, order.sub_mchid = opts.sp_mchid, a.sub_mchid or opts.sub_mchid
  else
    order.mchid = opts.mchid
  end
  local body = os.tmpname()
  local f = assert(io.open(body, "wb"))
  f:write(json_encode(order))
  f:close()
  local out = sh(("curl -sS -m 10 -X POST -H 'Content-Type: application/json' --data-binary @%s "
    .. "-w '\\n%%{http_code}' %s 2>&1"):format(shell_quote(body), shell_quote(sb.control_url .. "/orders")))
  os.remove(body)
  local text, status = out:match("^(.*)\n(%d+)$")
  if status ~= "200" then
    local d = cjson.decode(text or "")
    local why = type(d) == "table" and d.error or out:gsub("%s+$", "")
    fail(EXIT_USAGE, "SANDBOX_ERROR", "the sandbox refused the seed order: " .. tostring(why))
  end
  self:err(("wxpay: sandbox: seeded order %s in state %s\n"):format(
    a.out_trade_no or ("transaction_id " .. a.transaction_id), a.seed))
end

return Sandbox
