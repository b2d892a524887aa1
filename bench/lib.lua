--- Helpers shared by the bench workers and the driver (Lua 5.4 and LuaJIT).
local cjson = require "cjson"

local B = {}

B.json = cjson

-- file and shell helpers shared with the test suite
local H = require "spec.helpers"
B.read, B.write, B.sh = H.read, H.write, H.sh

--- Quotes a string for the shell.
function B.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local CLK_TCK = 100   -- Linux USER_HZ; the driver checks `getconf CLK_TCK`

--- This process's user and system CPU seconds, from /proc/self/stat
-- (getrusage's source; clock-tick resolution).
function B.rusage()
  local stat = B.read("/proc/self/stat") or ""
  -- the command name (field 2) may hold spaces: skip past its closing paren
  local rest = stat:match("^%d+ %b() (.*)$") or ""
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- rest starts at field 3 (state): utime is field 14, stime field 15
  local ut, st = tonumber(fields[12]) or 0, tonumber(fields[13]) or 0
  return ut / CLK_TCK, st / CLK_TCK
end

--- A field of /proc/self/status in kB (VmHWM, VmRSS…).
function B.status_kb(name)
  local s = B.read("/proc/self/status") or ""
  return tonumber(s:match(name .. ":%s+(%d+) kB"))
end

--- The largest resident mappings of this process (from /proc/self/smaps),
-- grouped by file ([heap], [anon] …): a list of {name=, kb=}, largest first,
-- and the process's private dirty kB (memory that is its own, not shared
-- library text).
function B.rss_by_mapping(top)
  local sizes, name, private = {}, nil, 0
  for line in (B.read("/proc/self/smaps") or ""):gmatch("[^\n]+") do
    local path = line:match("^%x+%-%x+ %S+ %x+ %S+ %d+%s*(.*)$")
    if path then
      name = path ~= "" and path:match("([^/]+)$") or "[anon]"
    else
      local kb = tonumber(line:match("^Rss:%s+(%d+) kB"))
      if kb and name then sizes[name] = (sizes[name] or 0) + kb end
      private = private + (tonumber(line:match("^Private_Dirty:%s+(%d+) kB")) or 0)
    end
  end
  local list = {}
  for k, v in pairs(sizes) do list[#list + 1] = { name = k, kb = v } end
  table.sort(list, function(a, b) return a.kb > b.kb end)
  local res = {}
  for i = 1, math.min(top or #list, #list) do res[i] = list[i] end
  return res, private
end

--- The value at quantile q of a sorted list (nearest rank).
function B.quantile(sorted, q)
  local n = #sorted
  if n == 0 then return nil end
  local i = math.ceil(q * n)
  if i < 1 then i = 1 elseif i > n then i = n end
  return sorted[i]
end

function B.median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

--- One control-endpoint request through curl: status, decoded body.
function B.control(cfg, method, path, body)
  local data = ""
  if body ~= nil then
    data = " -H 'Content-Type: application/json' --data-binary " .. B.q(cjson.encode(body))
  end
  local out = B.sh(("curl -s -m 30 -X %s%s -w '\\n%%{http_code}' %s")
    :format(method, data, B.q(cfg.control_url .. path)))
  local text, status = out:match("^(.*)\n(%d+)$")
  local ok, decoded = pcall(cjson.decode, text or "")
  return tonumber(status), ok and decoded or text
end

--- Prints one JSON line (the workers' only stdout output).
function B.emit(t)
  io.stdout:write(cjson.encode(t), "\n")
  io.stdout:flush()
end

return B
