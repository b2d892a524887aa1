--- The wxpay.Client object: its fields, logging, lifetime and printing, and
-- the methods of the modules that each do one part of a call:
--   orders (revoke, query, request) -> call (sign, send, backup hosts)
--   -> verify (signature, clock, serial) -> certificates (download, refresh;
--   certcache: shared_dict / cache_dir);
--   cancel (the cancel flow); batch (revoke_many); notification (verify + decrypt).
-- Must not: hold key material in the client table (see wxpay.secrets).
local secrets = require "wxpay.secrets"

local Client = {}
Client.__index = Client
Client.__name = "wxpay.Client"

for _, name in ipairs { "wxpay.call", "wxpay.verify", "wxpay.certificates", "wxpay.orders",
  "wxpay.cancel", "wxpay.batch", "wxpay.notification" } do
  for k, v in pairs(require(name)) do
    if type(v) == "function" then
      assert(Client[k] == nil, "two modules define client:" .. k)
      Client[k] = v
    end
  end
end

--- A client from validated settings (wxpay.config.load), its secrets and key store.
function Client.new(settings, s, store)
  local self = setmetatable(settings, Client)
  self.keys = store
  self.preferred = 1
  secrets.set(self, s)
  return self
end

function Client:_log(level, message, fields)
  local log = self.logger
  if log then
    local ok, err = pcall(log, level, message, fields or {})
    if not ok then io.stderr:write("wxpay: logger failed: ", tostring(err), "\n") end
  end
end

function Client:close()
  if not secrets.close(self) then return end
  if self._curl then self._curl.close() end
  if self._multi then self._multi:close() end
  self._multi = nil
  if self._cosocket and self._cosocket.close then self._cosocket.close() end
  self._curl, self._cosocket = nil, nil
  self.keys:close()
end

Client.__gc = Client.close
Client.__close = Client.close

function Client:__tostring()
  local closed = secrets.get(self) == nil
  local id = self.mode == "common" and ("mchid=" .. self.mchid)
    or ("sp_mchid=" .. self.sp_mchid .. (self.sub_mchid and (", sub_mchid=" .. self.sub_mchid) or ""))
  return ("wxpay.Client{mode=%s, %s, base_url=%s%s}"):format(self.mode, id, self.base_urls[1],
    closed and ", closed" or "")
end

return Client
