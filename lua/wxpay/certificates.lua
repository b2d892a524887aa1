--- Platform certificates: the download (decrypted with the APIv3 key and
-- verified with the set it brings, its nonce admitted once like every
-- answer's), the 12-hourly refresh, one download at a time per client, the
-- download shared through `shared_dict` / `cache_dir` (wxpay.certcache), and
-- client:certificates().  The store itself is wxpay.keystore.
-- Must not: trust a certificate the APIv3 key did not authenticate, or let
-- the APIv3 key leave wxpay.secrets.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local secrets = require "wxpay.secrets"
local transport = require "wxpay.transport"
local certcache = require "wxpay.certcache"
local KeyStore = require "wxpay.keystore"
local Verify = require "wxpay.verify"

local Certificates = {}

local now = core.time
local monotonic_ms = core.monotonic_ms
local CLOCK_SKEW = Verify.CLOCK_SKEW
local UNKNOWN_SERIAL_PAUSE = Verify.UNKNOWN_SERIAL_PAUSE
local REFRESH_EVERY = 12 * 3600   -- certificate refresh interval
local WAIT_STEP_MS = 10           -- polling step while another download is in flight
Certificates.REFRESH_EVERY = REFRESH_EVERY

-- Warnings reach the logger, else nginx's error log, else stderr: a cache
-- someone tampered with must not go unnoticed.
function Certificates:_warn(message, fields)
  if self.logger then return self:_log("warn", message, fields) end
  if transport.in_nginx() then return transport.ngx_warn(message) end
  io.stderr:write("wxpay: warning: ", message, "\n")
end

-- How long one download may take (every host tried once), in ms.
function Certificates:_download_budget()
  return self.timeout_ms * #self.base_urls + 1000
end

-- Authenticates a download: decrypts every certificate with the APIv3 key
-- (AES-GCM: a tag that does not match refuses it), drops expired ones, and
-- checks the answer's RSA signature with the certificate of the set that
-- `wechatpay-serial` names (or one the client already trusts).  `fresh_at`:
-- also require the signed timestamp within ±300 s of it (a live answer).
-- Returns the list of entries (not stored yet) or nil, err.
function Certificates:_authenticate(body, h, t, fresh_at)
  local list, perr = KeyStore.parse_download(body, secrets.open(self).apiv3_key, t)
  if not list then return nil, errors.BAD_RESPONSE, "certificate download: " .. perr end
  local serial, ts, nonce, sig = h["wechatpay-serial"], h["wechatpay-timestamp"],
    h["wechatpay-nonce"], h["wechatpay-signature"]
  local key
  for _, e in ipairs(list) do
    if e.serial_no == serial then key = e.key end
  end
  key = key or self.keys:get(serial or "", t)
  local ok = key and ts and ts:match("^%d+$") and #ts <= 12 and nonce and sig
  if ok and fresh_at then ok = math.abs(fresh_at - tonumber(ts)) <= CLOCK_SKEW end
  if not (ok and key:verify_response(ts, nonce, body, sig)) then
    for _, e in ipairs(list) do e.key:close() end
    return nil, errors.BAD_SIGNATURE, "the certificate download's signature does not verify with the downloaded set"
  end
  return list
end

--- Downloads, decrypts and verifies the platform certificates.
-- Returns true, the answer (for the caller to keep), or nil, err.
function Certificates:_download()
  local r, err = self:_send("GET", "/v3/global/certificates", "")
  if not r then return nil, err end
  local rid = r.headers["request-id"]
  if r.status ~= 200 then
    local _, e = self:_error_from(r)
    return nil, e
  end
  local t = now()
  local list, code, why = self:_authenticate(r.body, r.headers, t, t)
  if not list then
    local verified
    if code == errors.BAD_SIGNATURE then verified = false end
    return nil, errors.new(code, why, { status = r.status, request_id = rid, verified = verified })
  end
  -- the same nonce memory as every other verified answer: a replayed download
  -- counts once (a saved record, re-checked in _adopt, is old by design and is not)
  local fresh_nonce
  fresh_nonce, why = Verify._admit_nonce(r.headers["wechatpay-serial"], r.headers["wechatpay-nonce"],
    r.headers["wechatpay-timestamp"], t, self)
  if not fresh_nonce then
    for _, e in ipairs(list) do e.key:close() end
    return nil, errors.new(errors.BAD_SIGNATURE, "certificate download: " .. why,
      { status = r.status, request_id = rid, verified = false })
  end
  self.keys:replace_downloaded(list, t)
  self:_log("info", "platform certificates downloaded", { count = #list, request_id = rid })
  return true, r
end

-- A record someone saved (another worker, an earlier process): adopted when
-- it is newer than what the client has, under 12 h old, and authenticates.
-- Returns true when adopted, else false (a bad record is logged once).
function Certificates:_adopt(store, have)
  local text, lerr = store:load()
  if not text then
    if lerr and not tostring(lerr):find("No such file", 1, true) and lerr ~= "not found" then
      self:_warn(("ignoring the saved certificates in %s: %s"):format(store.label, tostring(lerr)))
    end
    return false
  end
  if text == self._bad_record then return false end
  local t = now()
  local rec, why = certcache.decode(text, self.auth_mchid, self.base_urls[1])
  local list, code
  if rec then
    local ts = tonumber(rec.headers["wechatpay-timestamp"]) or -math.huge
    -- the saved time is not signed: it must agree with the signed timestamp
    if math.abs(rec.saved_at - ts) > CLOCK_SKEW or rec.saved_at > t + CLOCK_SKEW then
      rec, why = nil, "its saved time does not match its signed timestamp"
    elseif rec.saved_at <= (have or -math.huge) or t - rec.saved_at >= REFRESH_EVERY then
      return false                                   -- not newer, or due for a refresh: no warning
    else
      list, code, why = self:_authenticate(rec.body, rec.headers, t)
      if not list and code == errors.BAD_RESPONSE then why = why:gsub("^certificate download: ", "") end
    end
  end
  if not list then
    self._bad_record = text
    self:_warn(("ignoring the saved certificates in %s: %s; downloading them again")
      :format(store.label, why), { store = store.label })
    return false
  end
  self.keys:replace_downloaded(list, rec.saved_at)
  self:_log("info", "platform certificates loaded from " .. store.label,
    { count = #list, saved_at = rec.saved_at, request_id = rec.request_id })
  return true
end

-- Keeps a verified download in every store (a failure is only a warning).
function Certificates:_save(r, at)
  local text = certcache.encode(self.auth_mchid, self.base_urls[1], r, at)
  for _, store in ipairs(self.cert_stores) do
    local ok, err = store:save(text)
    if not ok or err then
      self:_warn(("could not keep the certificate download in %s: %s"):format(store.label, tostring(err)))
    end
  end
end

-- With stores: what another worker or process saved, else one download
-- between all workers (the shared_dict lock), kept for the others.
function Certificates:_obtain()
  local stores = self.cert_stores
  if not stores then return self:_download() end
  local have = self.keys.downloaded_at
  for _, store in ipairs(stores) do
    if self:_adopt(store, have) then return true end
  end
  local dict = stores.dict
  if not dict then
    local ok, r = self:_download()
    if ok then self:_save(r, self.keys.downloaded_at) end
    return ok, r
  end
  local budget = self:_download_budget()
  local deadline = monotonic_ms() + budget
  local waited = false
  while true do
    local got, lerr = dict:lock(budget / 1000)
    if got or got == nil then
      if got == nil then self:_warn("shared_dict lock failed: " .. tostring(lerr) .. "; downloading") end
      -- another worker may have finished between our look and the lock
      if waited and self:_adopt(dict, have) then
        if got then dict:unlock() end
        return true
      end
      local ok, r = self:_download()
      if ok then self:_save(r, self.keys.downloaded_at) end
      if got then dict:unlock() end
      return ok, r
    end
    if monotonic_ms() >= deadline then
      return nil, errors.new(errors.TIMEOUT, ("waited %d ms for another nginx worker's certificate download")
        :format(budget), { sent = false })
    end
    waited = true
    self:_sleep(WAIT_STEP_MS)
    if self:_adopt(dict, have) then return true end
  end
end

--- One download (or load) at a time per client: a call that finds one in
-- flight (another light thread, another coroutine of revoke_many) waits for
-- its outcome with the client's _sleep instead of starting a second one.
function Certificates:_refresh_certificates()
  local flight = self._downloading
  if flight then
    if not (self._batch or transport.cosocket_phase()) then
      return nil, errors.new(errors.NETWORK_ERROR, "a certificate download is in flight on this "
        .. "client and this context cannot wait for it (a call made from inside it?)", { sent = false })
    end
    local deadline = monotonic_ms() + self:_download_budget()
    while not flight.done and monotonic_ms() < deadline do self:_sleep(WAIT_STEP_MS) end
    if not flight.done then
      return nil, errors.new(errors.TIMEOUT, "waited too long for the certificate download in flight",
        { sent = false })
    end
    if flight.ok then return true end
    return nil, flight.err
  end
  flight = { done = false }
  self._downloading = flight
  local ok, a, b = pcall(self._obtain, self)
  self._downloading = nil
  flight.done = true
  if not ok then error(a, 0) end
  flight.ok = a and true or false
  flight.err = (not a) and b or nil
  if a then return true end
  return nil, b
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
