--- Platform certificates: the download (decrypted with the APIv3 key and
-- verified with the set it brings, its nonce admitted once like every
-- answer's), the 12-hourly refresh, and
-- client:certificates().  The store itself is wxpay.keystore.
-- Must not: trust a certificate the APIv3 key did not authenticate, or let
-- the APIv3 key leave wxpay.secrets.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local secrets = require "wxpay.secrets"
local KeyStore = require "wxpay.keystore"
local Verify = require "wxpay.verify"

local Certificates = {}

local now = core.time
local CLOCK_SKEW = Verify.CLOCK_SKEW
local UNKNOWN_SERIAL_PAUSE = Verify.UNKNOWN_SERIAL_PAUSE
local REFRESH_EVERY = 12 * 3600   -- certificate refresh interval

--- Downloads, decrypts and verifies the platform certificates.
function Certificates:_refresh_certificates()
  self._downloading = true
  local ok, err = self:_download()
  self._downloading = false
  return ok, err
end

function Certificates:_download()
  local s = secrets.open(self)
  local r, err = self:_send("GET", "/v3/global/certificates", "")
  if not r then return nil, err end
  local rid = r.headers["request-id"]
  if r.status ~= 200 then
    local _, e = self:_error_from(r)
    return nil, e
  end
  local t = now()
  local list, perr = KeyStore.parse_download(r.body, s.apiv3_key, t)
  if not list then
    return nil, errors.new(errors.BAD_RESPONSE, "certificate download: " .. perr,
      { status = r.status, request_id = rid })
  end
  -- the bootstrap case: verify the download with what it brought (and what we had)
  local serial = r.headers["wechatpay-serial"]
  local key
  for _, e in ipairs(list) do
    if e.serial_no == serial then key = e.key end
  end
  key = key or self.keys:get(serial or "", t)
  local ts, nonce, sig = r.headers["wechatpay-timestamp"], r.headers["wechatpay-nonce"],
    r.headers["wechatpay-signature"]
  local fresh = ts and ts:match("^%d+$") and math.abs(t - tonumber(ts)) <= CLOCK_SKEW
  if not (key and fresh and nonce and sig and key:verify_response(ts, nonce, r.body, sig)) then
    for _, e in ipairs(list) do e.key:close() end
    return nil, errors.new(errors.BAD_SIGNATURE,
      "the certificate download's signature does not verify with the downloaded set",
      { status = r.status, request_id = rid, verified = false })
  end
  -- the same nonce memory as every other verified answer: a replayed download counts once
  local fresh_nonce, why = Verify._admit_nonce(serial, nonce, ts, t)
  if not fresh_nonce then
    for _, e in ipairs(list) do e.key:close() end
    return nil, errors.new(errors.BAD_SIGNATURE, "certificate download: " .. why,
      { status = r.status, request_id = rid, verified = false })
  end
  self.keys:replace_downloaded(list, t)
  self:_log("info", "platform certificates downloaded", { count = #list, request_id = rid })
  return true
end

-- Before a call: the first download, and the 12-hourly refresh.
function Certificates:_ensure_keys()
  local s = secrets.get(self)
  if not (s and s.apiv3_key) then return true end
  local at = self.keys.downloaded_at
  if at and now() - at < REFRESH_EVERY then return true end
  local ok, err = self:_refresh_certificates()
  if ok then return true end
  if self.keys:count() > 0 then   -- keep working with what we have
    self:_log("warn", "certificate refresh failed", { code = err.code, message = err.message })
    self.keys.downloaded_at = now() - REFRESH_EVERY + UNKNOWN_SERIAL_PAUSE
    return true
  end
  return nil, err
end

--- client:certificates() -> list of {serial_no, effective_time, expire_time, source}
function Certificates:certificates()
  secrets.open(self)
  if secrets.get(self).apiv3_key and not self.keys.downloaded_at then
    local ok, err = self:_refresh_certificates()
    if not ok then return nil, err end
  end
  return self.keys:list()
end

return Certificates
