--- One key store keyed by the `Wechatpay-Serial` string: platform
-- certificates (configured or downloaded) and WeChat Pay public keys
-- (`PUB_KEY_ID_…`).  Keys are parsed once, when they enter the store.
-- Must not: hold a private key or the APIv3 key (only public ones), or send.
local core = require "wxpay.core"
local util = require "wxpay.util"

local KeyStore = {}
KeyStore.__index = KeyStore
KeyStore.__name = "wxpay.KeyStore"

function KeyStore.new()
  return setmetatable({ entries = {}, downloaded_at = nil, last_unknown = nil }, KeyStore)
end

--- Adds a certificate (PEM text). Returns the entry or nil, reason.
function KeyStore:add_certificate(pem, source)
  local key, info = core.load_certificate(pem)
  if not key then return nil, info end
  local e = { key = key, serial_no = info.serial_no, not_before = info.not_before,
    not_after = info.not_after, source = source }
  self.entries[e.serial_no] = e
  return e
end

function KeyStore:add_public_key(pem, id)
  local key, err = core.load_public_key(pem)
  if not key then return nil, err end
  local e = { key = key, serial_no = id, source = "public_key" }
  self.entries[id] = e
  return e
end

--- The verifying key for a serial, if known and valid now.
function KeyStore:get(serial, now)
  local e = self.entries[serial]
  if not e then return nil, "unknown" end
  if e.not_before and (now < e.not_before or now > e.not_after) then
    return nil, "outside its validity"
  end
  return e.key
end

local function contains(list, key)
  for _, e in ipairs(list) do if e.key == key then return true end end
  return false
end

--- Replaces the downloaded set with `list` (entries made by parse_download).
function KeyStore:replace_downloaded(list, now)
  for serial, e in pairs(self.entries) do
    if e.source == "download" then
      self.entries[serial] = nil
      if not contains(list, e.key) then e.key:close() end
    end
  end
  for _, e in ipairs(list) do self.entries[e.serial_no] = e end
  self.downloaded_at = now
end

function KeyStore:count()
  local n = 0
  for _ in pairs(self.entries) do n = n + 1 end
  return n
end

function KeyStore:list()
  local out = {}
  for _, e in pairs(self.entries) do
    out[#out + 1] = {
      serial_no = e.serial_no,
      effective_time = e.not_before and util.iso8601(e.not_before) or nil,
      expire_time = e.not_after and util.iso8601(e.not_after) or nil,
      source = e.source,
    }
  end
  table.sort(out, function(a, b) return a.serial_no < b.serial_no end)
  return out
end

function KeyStore:close()
  for serial, e in pairs(self.entries) do
    e.key:close()
    self.entries[serial] = nil
  end
end

--- Decrypts and checks a `GET /v3/global/certificates` answer body.
-- Returns a list of entries (not yet stored) or nil, reason.  Nothing is
-- trusted until the caller verified the answer's signature with the set.
function KeyStore.parse_download(body, apiv3_key, now)
  local doc = util.json_decode(body)
  if type(doc) ~= "table" or type(doc.data) ~= "table" then
    return nil, "the certificate list is not JSON with a data array"
  end
  local list = {}
  for i, item in ipairs(doc.data) do
    local enc = type(item) == "table" and item.encrypt_certificate
    if type(enc) ~= "table" or type(item.serial_no) ~= "string"
      or type(enc.nonce) ~= "string" or type(enc.ciphertext) ~= "string" then
      return nil, ("certificate %d of the list is malformed"):format(i)
    end
    if enc.algorithm ~= "AEAD_AES_256_GCM" then
      return nil, ("certificate %d uses an unknown algorithm"):format(i)
    end
    local aad = type(enc.associated_data) == "string" and enc.associated_data or ""
    local pem, err = core.aes_gcm_decrypt(apiv3_key, enc.nonce, aad, enc.ciphertext)
    if not pem then
      return nil, ("certificate %s could not be decrypted: %s"):format(util.show(item.serial_no), err)
    end
    local key, info = core.load_certificate(pem)
    if not key then return nil, ("certificate %s: %s"):format(util.show(item.serial_no), info) end
    if info.serial_no ~= item.serial_no:upper() then
      key:close()
      return nil, ("certificate serial %s does not match the listed serial_no %s")
        :format(info.serial_no, util.show(item.serial_no))
    end
    if now <= info.not_after then
      list[#list + 1] = { key = key, serial_no = info.serial_no, not_before = info.not_before,
        not_after = info.not_after, source = "download" }
    else
      key:close() -- expired: never used
    end
  end
  if #list == 0 then return nil, "the certificate list holds no valid certificate" end
  return list
end

return KeyStore
