--- client:notification(headers, body): a notification WeChat Pay posted to
-- the merchant's handler, checked with the one verification path
-- (wxpay.verify: Wechatpay-* headers, ±300 s clock, key by serial with the
-- same store/download/refresh rules, RSA-SHA256), then its `resource`
-- decrypted (AEAD_AES_256_GCM, the APIv3 key from wxpay.secrets), and its
-- `id` looked up among the ids verified before (`event.seen`).
-- Must not: read, decrypt or return anything of the body before its signature
-- verified; put the resource or the APIv3 key into an error or a log line;
-- refuse an event because its id was seen before; send anything itself.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local secrets = require "wxpay.secrets"
local transport = require "wxpay.transport"
local util = require "wxpay.util"

local Notification = {}

local now = core.time
local ALGORITHM = "AEAD_AES_256_GCM"
local SIGNED = { "wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial" }
-- WeChat retries a notification for about 24 h (15 s, 15 s, 30 s, 3 min, … 6 h);
-- an id is remembered a little longer than that, and at most SEEN_MAX ids per client.
local SEEN_TTL = 25 * 3600
local SEEN_MAX = 10000

Notification.SEEN_TTL, Notification.SEEN_MAX = SEEN_TTL, SEEN_MAX

local function bad_signature(why)
  return nil, errors.new(errors.BAD_SIGNATURE, why, { verified = false })
end

local function bad_notification(why)
  return nil, errors.new(errors.BAD_NOTIFICATION, why, { verified = true })
end

-- The Wechatpay-* headers, names lowercased, one string each. A header given
-- as a list (ngx.req.get_headers() for a repeated header) or under two
-- spellings is accepted only when every copy is the same. Other headers are
-- not read (proxies legitimately repeat some of them).
local function signed_headers(headers)
  local h = {}
  for k, v in pairs(headers) do
    if type(k) == "string" then
      local name = k:lower()
      if name:sub(1, 10) == "wechatpay-" then
        local value = v
        if type(v) == "table" then
          value = v[1]
          for i = 1, #v do
            if type(v[i]) ~= "string" or v[i] ~= value then
              return nil, ("the notification's %s header comes %d times with different values")
                :format(k, #v)
            end
          end
        end
        if type(value) ~= "string" then
          return nil, ("the notification's %s header is not a string"):format(k)
        end
        if h[name] ~= nil and h[name] ~= value then
          return nil, ("the notification's %s header comes twice with different values"):format(k)
        end
        h[name] = value
      end
    end
  end
  return h
end

-- Whether this client verified the id before (and remember it now).
-- nginx: the client's lua_shared_dict (all workers) when it has one;
-- elsewhere, or when the dict refuses: a per-client table, expiring and bounded.
local function shared_dict(self) return transport.shared_dict(self.shared_dict) end

local function drop_oldest(s)
  local old = s.queue[s.head]
  s.at[old], s.queue[s.head] = nil, nil
  s.head = s.head + 1
end

function Notification:_seen(id)
  local t = now()
  local dict = shared_dict(self)
  if dict then
    local ok, err = dict:add("wxpay:seen:" .. tostring(self.auth_mchid) .. ":" .. id, true, SEEN_TTL)
    if ok then return false end
    if err == "exists" then return true end
    self:_log("warn", "seen-id check: the shared dict refused the id", { err = tostring(err) })
  end
  local s = self._seen_ids
  if not s then
    s = { at = {}, queue = {}, head = 1, tail = 0 }
    self._seen_ids = s
  end
  -- ids expire in the order they came (one TTL for all): drop from the front
  -- what expired, then (to make room for a new id) the oldest while full
  while s.head <= s.tail and t - s.at[s.queue[s.head]] >= SEEN_TTL do drop_oldest(s) end
  if s.at[id] then return true end
  while s.tail - s.head + 1 >= SEEN_MAX do drop_oldest(s) end
  s.tail = s.tail + 1
  s.queue[s.tail], s.at[id] = id, t
  return false
end

local function opt_string(v)
  if type(v) == "string" then return v end
  return nil
end

--- client:notification(headers, body) -> event | nil, err
function Notification:notification(headers, body)
  if type(headers) ~= "table" then util.raise("notification: headers must be a table", 2) end
  if type(body) ~= "string" then
    util.raise("notification: body must be the raw request body (a string)", 2)
  end
  local s = secrets.open(self)
  if not s.apiv3_key then
    return nil, errors.new(errors.CONFIG_ERROR,
      "notifications need apiv3_key: the client cannot decrypt their resource without it")
  end
  if #body > self.max_body then
    return nil, errors.new(errors.BAD_NOTIFICATION, ("the notification body is %d bytes, over "
      .. "max_body_bytes (%d); nothing of it was read"):format(#body, self.max_body))
  end
  -- 1. the signature (headers, clock, serial, RSA-SHA256), as for answers
  local h, herr = signed_headers(headers)
  if not h then return bad_signature(herr) end
  for _, name in ipairs(SIGNED) do
    if not h[name] then
      return bad_signature("the notification carries no Wechatpay-Signature/-Timestamp/-Nonce/-Serial")
    end
  end
  local ok, kerr = self:_ensure_keys()
  if not ok then return nil, kerr end
  local verified, why = self:_verify({ headers = h, body = body }, "notification")
  if not verified then
    self:_log("warn", "notification refused", { code = errors.BAD_SIGNATURE, message = why })
    return bad_signature(why)
  end
  -- 2. the body: a JSON object with an AEAD_AES_256_GCM resource
  local doc = util.json_decode(body)
  if type(doc) ~= "table" then return bad_notification("the notification body is not JSON") end
  if type(doc.id) ~= "string" or doc.id == "" or type(doc.event_type) ~= "string" then
    return bad_notification("the notification body has no id or event_type")
  end
  local res = doc.resource
  if type(res) ~= "table" then return bad_notification("the notification body has no resource object") end
  if res.algorithm ~= ALGORITHM then
    return bad_notification(("the resource's algorithm is %s, not %s"):format(util.show(res.algorithm), ALGORITHM))
  end
  local aad = res.associated_data
  if aad == nil or aad == util.null then aad = "" end
  if type(res.ciphertext) ~= "string" or type(res.nonce) ~= "string" or res.nonce == ""
    or type(aad) ~= "string" then
    return bad_notification("the resource lacks a ciphertext, nonce or associated_data string")
  end
  -- 3. decrypt (the tag authenticates ciphertext and associated_data)
  local plaintext, derr = core.aes_gcm_decrypt(s.apiv3_key, res.nonce, aad, res.ciphertext)
  if not plaintext then
    self:_log("warn", "notification does not decrypt", { id = doc.id, why = derr })
    return bad_notification("the resource does not decrypt with the APIv3 key (wrong key, "
      .. "nonce or associated_data, or a damaged ciphertext): " .. tostring(derr))
  end
  local resource = util.json_decode(plaintext)
  if type(resource) ~= "table" then
    return bad_notification("the decrypted resource is not a JSON object")
  end
  local event = {
    id = doc.id, create_time = opt_string(doc.create_time), event_type = doc.event_type,
    resource_type = opt_string(doc.resource_type), summary = opt_string(doc.summary),
    original_type = opt_string(res.original_type),
    resource = resource, plaintext = plaintext,
  }
  event.seen = self:_seen(doc.id)
  self:_log("info", "notification verified", { id = event.id, event_type = event.event_type,
    seen = event.seen })
  return event
end

return Notification
