--- Checks a signed message from WeChat Pay (an API answer; a notification
-- uses the same rules): the Wechatpay-* headers, the ±300 s clock window,
-- the signing key picked by serial, and the RSA-SHA256 signature.
-- Must not: send anything itself (an unknown serial asks certificates.lua
-- for one refresh), or accept a message it could not verify.
local core = require "wxpay.core"
local util = require "wxpay.util"
local secrets = require "wxpay.secrets"

local Verify = {}

local now = core.time
local CLOCK_SKEW = 300            -- seconds an answer's timestamp may be off
local UNKNOWN_SERIAL_PAUSE = 60   -- at most one download a minute for unknown serials
local SIG_TYPE = "WECHATPAY2-SHA256-RSA2048"

Verify.CLOCK_SKEW = CLOCK_SKEW
Verify.UNKNOWN_SERIAL_PAUSE = UNKNOWN_SERIAL_PAUSE

--- Verifies an answer's signature. Returns true, or false and why.
function Verify:_verify(r)
  local h = r.headers
  local ts, nonce, sig, serial =
    h["wechatpay-timestamp"], h["wechatpay-nonce"], h["wechatpay-signature"], h["wechatpay-serial"]
  if not (ts and nonce and sig and serial) then
    return false, "the answer carries no Wechatpay-Signature/-Timestamp/-Nonce/-Serial"
  end
  local st = h["wechatpay-signature-type"]
  if st and st ~= SIG_TYPE then return false, "unsupported signature type " .. util.show(st) end
  if not ts:match("^%d+$") or #ts > 12 then return false, "malformed Wechatpay-Timestamp" end
  local t = now()
  if math.abs(t - tonumber(ts)) > CLOCK_SKEW then
    return false, ("the answer's timestamp is %d s away from local time (limit %d s)")
      :format(math.floor(math.abs(t - tonumber(ts))), CLOCK_SKEW)
  end
  local key, why = self.keys:get(serial, t)
  if not key and (secrets.get(self) or {}).apiv3_key then
    local last = self.keys.last_unknown
    if self._downloading then  -- one in flight (another light thread): wait for its outcome
      if self:_refresh_certificates() then key, why = self.keys:get(serial, t) end
    elseif not last or t - last >= UNKNOWN_SERIAL_PAUSE then
      self.keys.last_unknown = t
      self:_log("info", "unknown platform serial: refreshing certificates", { serial = serial })
      local ok = self:_refresh_certificates()
      if ok then key, why = self.keys:get(serial, t) end
    end
  end
  if not key then
    return false, ("the answer is signed by %s key %s"):format(why, util.show(serial))
  end
  if not key:verify_response(ts, nonce, r.body, sig) then
    return false, "the answer's signature does not verify"
  end
  return true
end

return Verify
