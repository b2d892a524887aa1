--- Pacing of revoke requests to WeChat Pay's per-merchant limit (150 revoke
-- requests a second): a "next free slot" schedule, one slot every 1/rate
-- seconds, per merchant id that signs (auth_mchid).
-- * In one process every client of a merchant shares one schedule (the
--   module-level `lanes` table). The schedule also keeps when each of the
--   last `rate` requests was answered: a request never leaves sooner than 1 s
--   after the answer to the one `rate` places before it, so however late a
--   request reached WeChat (a slow handshake, a busy host), no second ever
--   holds more than `rate` of them.
-- * With `shared_dict` under nginx, every worker shares it: each slot is
--   claimed in ngx.shared[name] with safe_add (atomic, never evicts), so no
--   slot is ever handed out twice, whichever worker asks.
-- Must not: sleep (the caller waits with its own _sleep: a yield inside
-- revoke_many, ngx.sleep, nanosleep), store anything but slot markers in the
-- dict (never a key), or pace requests other than those it is asked to.
local core = require "wxpay.core"

local Pace = {}

local monotonic_ms = core.monotonic_ms
local floor, max = math.floor, math.max

-- auth_mchid -> { next = monotonic ms of the next free slot }
local lanes = {}

Pace.DEFAULT_RATE = 150
-- Slots are spaced this much wider than 1/rate: a request that leaves on time
-- may arrive a little late and the next one on time, and WeChat counts
-- arrivals in a sliding second. 2 % keeps jitter of a few ms from ever
-- putting rate + 1 requests in one second.
Pace.MARGIN = 1.02

local function interval_ms(rate) return 1000 * Pace.MARGIN / rate end

local RING = 4096 -- answers remembered per merchant (the window guard works up to rate = RING)

-- This process's schedule for the merchant: the next free slot, now or later,
-- and not sooner than 1 s (+ margin) after the request `rate` places earlier
-- was answered (or, while it is still out, was sent). Returns the slot and
-- the ticket that Pace.done marks answered.
local function local_slot(mchid, rate, interval, now)
  local lane = lanes[mchid]
  if not lane then
    lane = { next = now, seq = 0, ring = {} }
    lanes[mchid] = lane
  end
  local slot = max(now, lane.next)
  local seq = lane.seq + 1
  lane.seq = seq
  local n = floor(rate)
  if n >= 1 and n <= RING then
    local before = lane.ring[(seq - n) % RING]
    if before and before.seq == seq - n then
      slot = max(slot, (before.answered or before.slot) + 1000 * Pace.MARGIN)
    end
  end
  local ticket = { seq = seq, slot = slot }
  lane.ring[seq % RING] = ticket
  lane.next = slot + interval
  return slot, ticket
end

-- A slot claimed in an nginx shared dict: slot i starts at i * interval on the
-- host's monotonic clock (one clock for all workers). The hint is only where
-- to start looking; safe_add is what makes a claim exclusive.
local function dict_slot(dict, mchid, rate, interval, now)
  local prefix = "wxpay:pace:" .. mchid .. ":" .. rate .. ":"
  local hint_key = prefix .. "next"
  local i = floor(now / interval)
  local hint = dict:get(hint_key)
  if type(hint) == "number" and hint > i then i = hint end
  for _ = 1, 100000 do
    local at = i * interval
    local ttl = max(at - now, 0) / 1000 + 2
    local ok, err = dict:safe_add(prefix .. i, true, ttl)
    if ok then
      local h = dict:get(hint_key)
      if type(h) ~= "number" or h < i + 1 then dict:set(hint_key, i + 1, ttl) end
      return max(at, now)
    end
    if err ~= "exists" then return nil, err end -- no memory: the caller paces locally
    i = i + 1
  end
  return nil, "no free slot found"
end

local function shared_dict(name)
  local ngx = rawget(_G, "ngx")
  local shared = type(ngx) == "table" and ngx.shared
  return shared and shared[name] or nil
end

--- How long (ms) the client must wait before sending its next revoke request,
-- and a ticket to pass to Pace.done when its answer (or failure) is in; the
-- slot is taken by this call. 0 when pacing is off (`rate = false`).
function Pace.wait_ms(client)
  local rate = client.rate
  if not rate then return 0 end
  local mchid = client.auth_mchid
  local interval = interval_ms(rate)
  local now = monotonic_ms()
  local slot
  local dict = client.shared_dict and shared_dict(client.shared_dict)
  if dict then
    local err
    slot, err = dict_slot(dict, mchid, rate, interval, now)
    if not slot and not client._warned_pace then
      client._warned_pace = true
      client:_log("warn", "shared pacing unavailable, pacing this worker only", { error = err })
    end
  end
  local ticket
  if not slot then slot, ticket = local_slot(mchid, rate, interval, now) end
  return slot - now, ticket
end

--- The request of this ticket has its answer (or has failed): it reached
-- WeChat, if ever, before now.
function Pace.done(ticket)
  if ticket then ticket.answered = monotonic_ms() end
end

--- Validates the `rate` option: nil -> the default, false -> off, else a
-- number of requests per second. Returns the value or nil, message.
function Pace.check_rate(rate)
  if rate == nil then return Pace.DEFAULT_RATE end
  if rate == false then return false end
  if type(rate) ~= "number" or rate ~= rate or rate <= 0 or rate > 100000 then
    return nil, "rate must be a number of requests per second (0 < rate <= 100000), or false for no pacing"
  end
  return rate
end

return Pace
