--- Test helpers: a real sandbox per spec file, its control endpoint, clients.
local cjson = require "cjson"

local H = {}

H.root = os.getenv("PWD") or "."

-- Runs a shell command; returns its output, success (boolean) and exit code
-- (the CLI's own runner, which works under LuaJIT too).
local sh = require("wxpay.cli.output").sh
H.sh = sh

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local d = f:read("*a")
  f:close()
  return d
end
H.read = read

function H.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local Sandbox = {}
Sandbox.__index = Sandbox

--- Starts a sandbox in its own directory (credentials are made on first start).
function H.sandbox(name, extra_args)
  local dir = H.root .. "/.sandbox-test/" .. name .. (rawget(_G, "jit") and "-jit" or "-54")
  local out, ok = sh(("sandbox/ctl start %s %s 2>&1"):format(dir, extra_args or ""))
  assert(ok, "sandbox did not start: " .. out)
  return H.attach(dir .. "/sandbox.json")
end

--- A sandbox someone else started, from its sandbox.json.
function H.attach(sandbox_json)
  local cfg = cjson.decode(assert(read(sandbox_json)))
  return setmetatable({ dir = cfg.dir, cfg = cfg }, Sandbox)
end

function Sandbox:stop()
  sh(("sandbox/ctl stop %s"):format(self.dir))
end

--- One control request; returns status, decoded JSON.
function Sandbox:control(method, path, body)
  local bodyfile, data = "", nil
  if body ~= nil then
    bodyfile = os.tmpname()
    H.write(bodyfile, type(body) == "string" and body or cjson.encode(body))
    data = ("--data-binary @%s -H 'Content-Type: application/json'"):format(bodyfile)
  end
  local out = sh(("curl -s -m 10 -X %s %s -w '\\n%%{http_code}' '%s%s'")
    :format(method, data or "", self.cfg.control_url, path))
  if bodyfile ~= "" then os.remove(bodyfile) end
  local text, status = out:match("^(.*)\n(%d+)$")
  local ok, decoded = pcall(cjson.decode, text or "")
  return tonumber(status), ok and decoded or text
end

function Sandbox:reset() return self:control("POST", "/reset") end
function Sandbox:stats() return select(2, self:control("GET", "/stats")) end

function Sandbox:order(fields)
  local st, o = self:control("POST", "/orders", fields)
  assert(st == 200, "seeding an order failed: " .. tostring(st) .. " " .. cjson.encode(o))
  return o
end

function Sandbox:get_order(out_trade_no)
  local st, o = self:control("GET", "/orders/" .. out_trade_no)
  if st ~= 200 then return nil end
  return o
end

function Sandbox:fault(spec)
  local st, o = self:control("POST", "/faults", spec)
  assert(st == 200, "adding a fault failed: " .. tostring(st) .. " " .. cjson.encode(o))
  return o
end

function Sandbox:requests()
  return select(2, self:control("GET", "/requests"))
end

--- Options for a client of this sandbox; `over` replaces or removes (false) fields.
function Sandbox:options(over, mode)
  local c = self.cfg
  local o = {
    serial_no = c.serial_no,
    private_key = c.private_key,
    platform_certs = { c.platform_cert },
    base_url = c.base_url,
    ca_file = c.ca_file,
  }
  if mode == "institutional" then
    o.sp_mchid, o.sub_mchid = c.sp_mchid, c.sub_mchid
  else
    o.mchid = c.mchid
  end
  for k, v in pairs(over or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return o
end

function Sandbox:client(over, mode)
  local wxpay = require "wxpay"
  return assert(wxpay.new(self:options(over, mode)))
end

local seq = 0
--- A fresh order number, unique within the run.
function H.order_no(prefix)
  seq = seq + 1
  return ("%s%d%04d%04d"):format(prefix or "T", os.time() % 100000, math.random(0, 9999), seq)
end

--- Every private key byte string we must never print, from a PEM file.
function H.key_fragments(pem_path)
  local pem = assert(read(pem_path))
  local b64 = pem:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")
  local frags = {}
  for i = 1, #b64 - 24, 24 do frags[#frags + 1] = b64:sub(i, i + 23) end
  return frags
end

--- A TCP listener on 127.0.0.1 that records the first line each connection
-- sends (a proxy's "CONNECT host:port HTTP/1.1") and hangs up: proves where
-- a client's traffic went.  Stops by itself after 120 s without a connection.
-- Returns { port =, log =, stop = function }.
function H.recording_listener(dir)
  local py, portfile, log = dir .. "/listener.py", dir .. "/listener.port", dir .. "/listener.log"
  H.write(py, [[
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.settimeout(120)
while True:
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    c.settimeout(2)
    try:
        data = c.recv(1024)
    except Exception:
        data = b""
    with open(sys.argv[2], "a") as f:
        f.write(data.split(b"\r\n")[0].decode("latin1") + "\n")
    c.close()
]])
  H.write(log, "")
  local out = sh(("/usr/bin/python3 %q %q %q >/dev/null 2>&1 & echo $!"):format(py, portfile, log))
  local pid = assert(tonumber(out:match("%d+")), "the recording listener did not start")
  local port
  for _ = 1, 100 do
    port = tonumber(read(portfile) or "")
    if port then break end
    sh("sleep 0.05")
  end
  assert(port, "the recording listener did not start")
  return { port = port, log = log, stop = function() sh("kill " .. pid .. " 2>/dev/null") end }
end

return H
