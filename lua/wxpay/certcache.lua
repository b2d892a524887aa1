--- Where a platform certificate download is kept beyond one client: an nginx
-- lua_shared_dict (`shared_dict`, every worker of the nginx, with the
-- download lock) and a private directory (`cache_dir`, later processes).
-- What is kept is the download exactly as WeChat Pay sent it: the encrypted
-- answer body and the Wechatpay-* headers that sign it, with the time it was
-- saved and whom it is for.  wxpay.certificates re-authenticates every
-- record it reads (AES-GCM with the APIv3 key, RSA signature with the set it
-- brings) before trusting anything in it.
-- Must not: hold, write or log key material (no APIv3 key, no private key,
-- no decrypted certificate), trust what it reads, or let a broken store
-- raise: every failure is a value the caller turns into a warning.
local core = require "wxpay.core"
local util = require "wxpay.util"

local M = {}

local FORMAT = "wxpay-certificates/1"
M.MAX_RECORD = 512 * 1024          -- a record larger than this is refused unread
local SIGNED_HEADERS = { "wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature",
  "wechatpay-serial" }

--- A short stable name for a base URL (two 32-bit rolling hashes, as hex):
-- part of the key, so one cache serves many merchants and hosts.
function M.hash(s)
  local a, b = 5381, 7
  for i = 1, #s do
    local c = s:byte(i)
    a = (a * 33 + c) % 4294967291
    b = (b * 131 + c) % 4294967279
  end
  return ("%08x%08x"):format(a, b)
end

--- The name of a merchant's record: merchant id (mchid or sp_mchid, the one
-- that signs) and the hash of the primary base URL.
function M.name(auth_mchid, base_url)
  return ("certificates-%s-%s"):format(auth_mchid, M.hash(base_url))
end

--- A record from a verified download answer `r` (status 200, lowercased headers).
function M.encode(auth_mchid, base_url, r, saved_at)
  local h = {}
  for _, k in ipairs(SIGNED_HEADERS) do h[k] = r.headers[k] end
  return util.json_encode {
    format = FORMAT, mchid = auth_mchid, base_url = base_url, saved_at = saved_at,
    request_id = r.headers["request-id"], headers = h, body = r.body,
  }
end

--- Parses a record and checks its shape and whom it is for.  Returns
-- {body=, headers=, saved_at=, request_id=} or nil, why.  Nothing in it is
-- authenticated yet.
function M.decode(text, auth_mchid, base_url)
  if type(text) ~= "string" or #text > M.MAX_RECORD then return nil, "too large or not text" end
  local rec = util.json_decode(text)
  if type(rec) ~= "table" then return nil, "not a complete JSON record (truncated or damaged)" end
  if rec.format ~= FORMAT then return nil, "unknown record format" end
  if rec.mchid ~= auth_mchid then
    return nil, "saved for another merchant (" .. util.show(tostring(rec.mchid)) .. ")"
  end
  if rec.base_url ~= base_url then return nil, "saved for another base_url" end
  if type(rec.saved_at) ~= "number" or type(rec.body) ~= "string" or type(rec.headers) ~= "table" then
    return nil, "a field is missing or mistyped"
  end
  for _, k in ipairs(SIGNED_HEADERS) do
    if type(rec.headers[k]) ~= "string" then return nil, "the signature header " .. k .. " is missing" end
  end
  return rec
end

-------------------------------------------------------------------------------
-- nginx lua_shared_dict: the record, and the download lock (add with a TTL)
-------------------------------------------------------------------------------

local Dict = {}
Dict.__index = Dict

--- Checks that `name` is a lua_shared_dict of this nginx.  Returns the dict or nil, why.
function M.check_dict(name)
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or not ngx.get_phase then
    return nil, "shared_dict needs OpenResty/nginx (ngx is not available); use cache_dir outside nginx"
  end
  if name == "" or name:find("[%c]") then return nil, "shared_dict must be a lua_shared_dict name" end
  local dict = type(ngx.shared) == "table" and ngx.shared[name]
  if not dict then
    return nil, ("shared_dict %s: nginx.conf has no `lua_shared_dict %s SIZE;`")
      :format(util.show(name), name:find("^[%w_%-]+$") and name or "NAME")
  end
  return dict
end

function M.dict(dict, dict_name, record_name)
  return setmetatable({ dict = dict, key = "wxpay:" .. record_name,
    lock_key = "wxpay:" .. record_name .. ":lock", label = "shared_dict " .. dict_name }, Dict)
end

function Dict:load()
  local v, err = self.dict:get(self.key)
  if v == nil then return nil, err end
  if type(v) ~= "string" then return nil, "not a string record" end
  return v
end

function Dict:save(text)
  -- kept a day at most: a worker never relies on it longer than 12 h
  local ok, err, forcible = self.dict:set(self.key, text, 24 * 3600)
  if not ok then return nil, tostring(err) end
  if forcible then return true, "the dict was full: older items were evicted" end
  return true
end

--- The download lock: true when taken, false when another worker holds it.
function Dict:lock(ttl_s)
  local ok, err = self.dict:add(self.lock_key, tostring(rawget(_G, "ngx").worker.pid()), ttl_s)
  if ok then return true end
  if err == "exists" then return false end
  return nil, tostring(err)
end

function Dict:unlock()
  self.dict:delete(self.lock_key)
end

-------------------------------------------------------------------------------
-- A private directory (core.private_dir / read_private / write_private)
-------------------------------------------------------------------------------

local Dir = {}
Dir.__index = Dir

--- Creates (0700) or checks the directory.  Returns true or nil, why.
function M.check_dir(path)
  if type(core.private_dir) ~= "function" or type(core.write_private) ~= "function"
    or type(core.read_private) ~= "function" then
    return nil, "this build of wxpay.core has no private file helpers (core.private_dir): rebuild it"
  end
  if path == "" or path:find("\0", 1, true) then return nil, "cache_dir must be a directory path" end
  local ok, err = core.private_dir(path)   -- made 0700; no link, ours, not group/other-writable
  if not ok then return nil, "cache_dir: " .. tostring(err) end
  local mode = core.file_mode(path)
  if not mode or mode % 256 < 128 then     -- the owner's write bit (private_dir checked the owner)
    return nil, ("cache_dir: %s is not writable (mode %o)"):format(path, mode or 0)
  end
  return true
end

function M.dir(path, record_name)
  return setmetatable({ file = path:gsub("/+$", "") .. "/" .. record_name .. ".json",
    label = "cache_dir file " .. util.show_path(path .. "/" .. record_name .. ".json") }, Dir)
end

function Dir:load()
  local data, err = core.read_private(self.file, M.MAX_RECORD)
  if not data then return nil, err end
  return data
end

function Dir:save(text)
  local ok, err = core.write_private(self.file, text)
  if not ok then return nil, tostring(err) end
  return true
end

return M
