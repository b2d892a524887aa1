--- Where a client's key material lives: the private key object and the APIv3
-- key, in a table weakly keyed by client and never reachable from the client
-- table, so a REPL user dumping a client with pairs() sees no secret.
-- Must not: log, print or return key material anywhere but to its own callers.
local util = require "wxpay.util"

local M = {}

local store = setmetatable({}, { __mode = "k" })

--- Records a client's secrets: { key = <core private key>, apiv3_key = "…"? }.
function M.set(client, s) store[client] = s end

--- The client's secrets, or nil once closed.
function M.get(client)
  local s = store[client]
  if s and s.key then return s end
  return nil
end

--- The client's secrets; raises when the client was closed (the error
-- points at the caller of the public method that called this).
function M.open(client)
  local s = store[client]
  if not s or not s.key then util.raise("attempt to use a closed wxpay.Client", 3) end
  return s
end

--- Frees the key objects; idempotent.
function M.close(client)
  local s = store[client]
  if not s or not s.key then return false end
  s.key:close()
  s.key, s.apiv3_key = nil, nil
  return true
end

return M
