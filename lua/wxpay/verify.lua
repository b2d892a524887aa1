--- Checks a signed message from WeChat Pay (an API answer; a notification
-- uses the same rules): the Wechatpay-* headers, the ±300 s clock window,
-- the signing key picked by serial, the RSA-SHA256 signature, and that the
-- Wechatpay-Nonce was not seen before (one nonce memory per process).
-- Must not: send anything itself (an unknown serial asks certificates.lua
-- for one refresh), or accept a message it could not verify.
local core = require "wxpay.core"
local util = require "wxpay.util"
local secrets = require "wxpay.secrets"
local transport = require "wxpay.transport"

local Verify = {}

local now = core.time
local CLOCK_SKEW = 300            -- seconds an answer's timestamp may be off
local UNKNOWN_SERIAL_PAUSE = 60   -- at most one download a minute for unknown serials
local SIG_TYPE = "WECHATPAY2-SHA256-RSA2048"

Verify.CLOCK_SKEW = CLOCK_SKEW
Verify.UNKNOWN_SERIAL_PAUSE = UNKNOWN_SERIAL_PAUSE

-------------------------------------------------------------------------------
-- The nonce memory: every verified answer's (serial, nonce) is kept while its
-- timestamp is inside the ±CLOCK_SKEW window (after that the clock check
-- refuses the answer anyway), in buckets by timestamp second.  At its cap it
-- drops the oldest second and raises a floor: answers stamped at or before
-- the floor are refused too ("cannot rule out a replay"), never accepted.
-------------------------------------------------------------------------------
local NONCE_CAP = 100000   -- ~ 300 s of 150 revokes + 150 queries a second, ~15 MB at most
Verify.NONCE_CAP = NONCE_CAP

local Nonces = {}
Nonces.__index = Nonces

function Verify._new_nonce_memory(cap)
  return setmetatable({ cap = cap or NONCE_CAP, seen = {}, buckets = {}, n = 0, floor = nil }, Nonces)
end

function Nonces:count() return self.n end

local function drop_bucket(self, t)
  local b = self.buckets[t]
  if not b then return end
  for i = 1, #b do self.seen[b[i]] = nil end
  self.n = self.n - #b
  self.buckets[t] = nil
end

-- Forgets every second that is out of the window at local time `at`.
function Nonces:prune(at)
  local limit = at - CLOCK_SKEW
  if self.low and self.low < limit then
    if limit - self.low <= 2 * CLOCK_SKEW + 1 then
      for t = self.low, limit - 1 do drop_bucket(self, t) end
    else -- a long idle gap: fewer buckets than seconds
      local old = {}
      for t in pairs(self.buckets) do if t < limit then old[#old + 1] = t end end
      for _, t in ipairs(old) do drop_bucket(self, t) end
    end
    self.low = limit
  end
  if self.floor and self.floor < limit then self.floor = nil end
end

-- The lowest second that holds entries (nil when empty).
local function lowest(self)
  local low
  for t in pairs(self.buckets) do if not low or t < low then low = t end end
  return low
end

--- Admits a verified answer's nonce once: true, or false and why.
-- `ts` is its (already range-checked) timestamp, `at` the local time.
function Nonces:admit(serial, nonce, ts, at)
  self:prune(at)
  local key = serial .. "\0" .. nonce
  if self.seen[key] then return false, "replayed answer" end
  if self.floor and ts <= self.floor then
    return false, "cannot rule out a replayed answer: the nonce memory is full and "
      .. "this answer is older than the oldest it still holds"
  end
  while self.n >= self.cap do
    local low = lowest(self)
    if not low then break end
    drop_bucket(self, low)
    if not self.floor or low > self.floor then self.floor = low end
    if ts <= self.floor then
      return false, "cannot rule out a replayed answer: the nonce memory is full and "
        .. "this answer is older than the oldest it still holds"
    end
  end
  local b = self.buckets[ts]
  if not b then b = {}; self.buckets[ts] = b end
  b[#b + 1] = key
  self.seen[key] = ts
  self.n = self.n + 1
  if not self.low or ts < self.low then self.low = ts end
  return true
end

-- One memory for the process: every client, every kind of message.
local nonces = Verify._new_nonce_memory()
Verify._nonces = nonces

-- With `shared_dict` (nginx) the nonces are also claimed in the dict, so a
-- replay delivered to another worker is refused too: safe_add is atomic and
-- never evicts; an entry lives as long as its timestamp can pass the clock
-- check.  A full dict falls back to this worker's memory (still refusing what
-- this worker saw), with one warning per client.
local function dict_of(client)
  return client and transport.shared_dict(client.shared_dict)
end

--- Checks a message that already verified for a replayed nonce and remembers
-- it.  Used by _verify and by the certificate download's own verification;
-- `client` (optional) brings its shared_dict.
function Verify._admit_nonce(serial, nonce, ts, t, client)
  t = t or now()
  local ok, why = nonces:admit(serial, nonce, tonumber(ts), t)
  if not ok then return ok, why end
  local dict = dict_of(client)
  if dict then
    local ttl = math.max(1, tonumber(ts) + CLOCK_SKEW - t + 1)
    local added, err = dict:safe_add("wxpay:nonce:" .. serial .. ":" .. nonce, true, ttl)
    if not added then
      if err == "exists" then return false, "replayed answer" end
      if not client._warned_nonce_dict then
        client._warned_nonce_dict = true
        client:_log("warn", "shared_dict cannot hold more nonces: replays are refused per worker only",
          { error = tostring(err) })
      end
    end
  end
  return true
end

--- Verifies an answer's signature (or, with what = "notification", a
-- notification's: r = {headers = lowercased, body =}). Returns true, or false and why.
function Verify:_verify(r, what)
  what = what or "answer"
  local h = r.headers
  local ts, nonce, sig, serial =
    h["wechatpay-timestamp"], h["wechatpay-nonce"], h["wechatpay-signature"], h["wechatpay-serial"]
  if not (ts and nonce and sig and serial) then
    return false, "the " .. what .. " carries no Wechatpay-Signature/-Timestamp/-Nonce/-Serial"
  end
  local st = h["wechatpay-signature-type"]
  if st and st ~= SIG_TYPE then return false, "unsupported signature type " .. util.show(st) end
  if not ts:match("^%d+$") or #ts > 12 then return false, "malformed Wechatpay-Timestamp" end
  local t = now()
  if math.abs(t - tonumber(ts)) > CLOCK_SKEW then
    return false, ("the %s's timestamp is %d s away from local time (limit %d s)")
      :format(what, math.floor(math.abs(t - tonumber(ts))), CLOCK_SKEW)
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
    return false, ("the %s is signed by %s key %s"):format(what, why, util.show(serial))
  end
  if not key:verify_response(ts, nonce, r.body, sig) then
    return false, "the " .. what .. "'s signature does not verify"
  end
  -- only a verified answer is remembered: unsigned junk cannot fill the memory
  return Verify._admit_nonce(serial, nonce, ts, t, self)
end

return Verify
