--- Step 1 worker: Authorization headers per second through the Lua API.
--   lua5.4|luajit bench/sign.lua KEY_PEM_PATH SECONDS
-- Loads the key once, then calls key:authorization(...) for SECONDS of CPU
-- time. Prints one JSON line with the count and the user / system / wall time.
local B = require "bench.lib"
local core = require "wxpay.core"

local key_path, seconds = arg[1], tonumber(arg[2] or "3")
local pem = assert(B.read(key_path), "cannot read " .. tostring(key_path))
local key = assert(core.load_private_key(pem))

local MCHID, SERIAL = "1900000109", "273D1D95DFA8FB8375B48A5028CA60C81004ECDC"
local TARGET = "/v3/global/micropay/transactions/out-trade-no/BENCH0000000000000001/reverse"
local BODY = '{"mchid":"1900000109"}'

-- warm-up (first-use costs: RSA blinding, method caches)
for _ = 1, 20 do assert(key:authorization(MCHID, SERIAL, "POST", TARGET, BODY)) end

local n = 0
local u0, s0 = B.rusage()
local c0, w0 = os.clock(), core.monotonic_ms()
repeat
  for _ = 1, 50 do
    local auth = key:authorization(MCHID, SERIAL, "POST", TARGET, BODY)
    if not auth then error("signing failed") end
  end
  n = n + 50
until os.clock() - c0 >= seconds
local c1, w1 = os.clock(), core.monotonic_ms()
local u1, s1 = B.rusage()
key:close()

B.emit {
  interpreter = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION,
  n = n,
  user_s = u1 - u0, sys_s = s1 - s0, cpu_s = c1 - c0, wall_s = (w1 - w0) / 1000,
  per_user_s = n / (u1 - u0), per_cpu_s = n / (c1 - c0), per_wall_s = n / ((w1 - w0) / 1000),
}
