--- Pacing of revoke requests to WeChat Pay's per-merchant limit (150 a
-- second): one slot every 1/rate s per merchant id that signs (auth_mchid),
-- shared by every client of it in the process, and by every nginx worker
-- with `shared_dict`; a request also leaves no sooner than 1 s after the
-- answer `rate` places before it (see docs/batches.md).
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
local WINDOW = 1000 * Pace.MARGIN
local HOLD_MAX = 2000 -- never held longer than this past the earlier request's slot

-- This process's schedule for the merchant: the next free slot, now or later.
-- Returns the slot and the ticket for Pace.hold_ms and Pace.done.
local function local_slot(mchid, rate, interval, now)
  local lane = lanes[mchid]
  if not lane then
    lane = { next = now, seq = 0, ring = {} }
    lanes[mchid] = lane
  end
  local slot = max(now, lane.next)
  local seq = lane.seq + 1
  lane.seq = seq
  local ticket = { seq = seq, slot = slot, lane = lane, n = floor(rate) }
  lane.ring[seq % RING] = ticket
  lane.next = slot + interval
  return slot, ticket
end

-- A slot claimed in an nginx shared dict: slot i starts at i * interval on the
-- host's monotonic clock (one clock for all workers). The hint is only where
-- to start looking; safe_add is what makes a claim exclusive. The marker of
-- slot i becomes the time its request was answered (Pace.done).
local function dict_slot(dict, mchid, rate, interval, now)
  local prefix = "wxpay:pace:" .. mchid .. ":" .. rate .. ":"
  local hint_key = prefix .. "next"
  local i = floor(now / interval)
  local hint = dict:get(hint_key)
  if type(hint) == "number" and hint > i then i = hint end
  for _ = 1, 100000 do
    local at = i * interval
    local ttl = max(at - now, 0) / 1000 + 3
    local ok, err = dict:safe_add(prefix .. i, true, ttl)
    if ok then
      local h = dict:get(hint_key)
      if type(h) ~= "number" or h < i + 1 then dict:set(hint_key, i + 1, ttl) end
      return max(at, now), { dict = dict, prefix = prefix, i = i, interval = interval, n = floor(rate) }
    end
    if err ~= "exists" then return nil, err end -- no memory: the caller paces locally
    i = i + 1
  end
  return nil, "no free slot found"
end

local shared_dict = require("wxpay.transport").shared_dict

--- How long (ms) the client must wait before sending its next revoke request,
-- and a ticket for Pace.hold_ms and Pace.done; the slot is taken by this
-- call. 0 when pacing is off (`rate = false`).
function Pace.wait_ms(client)
  local rate = client.rate
  if not rate then return 0 end
  local mchid = client.auth_mchid
  local interval = interval_ms(rate)
  local now = monotonic_ms()
  local slot, ticket
  local dict = client.shared_dict and shared_dict(client.shared_dict)
  if dict then
    slot, ticket = dict_slot(dict, mchid, rate, interval, now)
    if not slot and not client._warned_pace then
      client._warned_pace = true
      client:_log("warn", "shared pacing unavailable, pacing this worker only", { error = ticket })
    end
  end
  if not slot then slot, ticket = local_slot(mchid, rate, interval, now) end
  return slot - now, ticket
end

--- Once its slot has come: how much longer (ms) the request must wait so that
-- it leaves at least 1 s (+ margin) after the answer to the request `rate`
-- places before it (0: send now). While that one is still out, a short wait
-- and ask again, for at most 2 s past that request's slot.
function Pace.hold_ms(ticket)
  if not ticket or ticket.n < 1 or ticket.n > RING then return 0 end
  local now = monotonic_ms()
  local answered, slot
  if ticket.lane then
    local before = ticket.lane.ring[(ticket.seq - ticket.n) % RING]
    if not before or before.seq ~= ticket.seq - ticket.n then return 0 end
    answered, slot = before.answered, before.slot
  else
    local v = ticket.dict:get(ticket.prefix .. (ticket.i - ticket.n))
    if v == nil then return 0 end -- never claimed, or long gone
    slot = (ticket.i - ticket.n) * ticket.interval
    if type(v) == "number" then answered = v end
  end
  if answered then return max(0, answered + WINDOW - now) end
  if now > slot + HOLD_MAX then return 0 end
  return max(1, WINDOW / ticket.n / 4)
end

--- The request of this ticket has its answer (or has failed): it reached
-- WeChat, if ever, before now.
function Pace.done(ticket)
  if not ticket then return end
  local now = monotonic_ms()
  if ticket.lane then
    ticket.answered = now
  else
    ticket.dict:safe_set(ticket.prefix .. ticket.i, now, 3)
  end
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
