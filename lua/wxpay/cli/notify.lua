--- `wxpay notification`: reads a saved notification (--headers/--body files
-- or the raw HTTP request on stdin) and prints the verified, decrypted event.
-- Must not: print anything client:notification did not verify, or raw bytes
-- from the input outside cli/output.lua's escaping.
local output = require "wxpay.cli.output"
local show_value = require("wxpay.cli.args").show_value

local M = {}
local EXIT_OK, usage_error = output.EXIT_OK, output.usage_error

-- "Name: value" lines into a headers table (a repeated name becomes a list,
-- as ngx.req.get_headers() gives it); a leading request line is skipped.
local function parse_header_lines(text, what)
  local h, first = {}, true
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if not (first and line:match("^%u+ %S+ HTTP/%d")) and line ~= "" then
      local name, value = line:match("^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$")
      if not name then
        usage_error(what .. ": not a \"Name: value\" header line: " .. show_value("", line), "notification")
      end
      local old = h[name]
      if old == nil then h[name] = value
      elseif type(old) == "table" then old[#old + 1] = value
      else h[name] = { old, value } end
    end
    first = false
  end
  return h
end

local function read_input(path, what)
  local f, err = io.open(path, "rb")
  if not f then usage_error(("cannot read %s: %s"):format(what, tostring(err)), "notification") end
  local data = f:read("*a") or ""
  f:close()
  return data
end

function M.run(ctx, client, a)
  local headers, body
  if a.headers_file then
    headers = parse_header_lines(read_input(a.headers_file, "--headers"), "--headers")
    body = read_input(a.body_file, "--body")
  else
    local raw = (ctx.stdin or io.stdin):read("*a") or ""
    local head, rest = raw:match("^(.-)\r?\n\r?\n(.*)$")
    if not head then usage_error("stdin holds no HTTP request (headers, an empty line, the body)", "notification") end
    headers = parse_header_lines(head, "stdin")
    body = rest
    for k, v in pairs(headers) do
      local name = k:lower()
      if name == "transfer-encoding" then
        usage_error("a chunked request body: save the decoded body and use --headers/--body", "notification")
      elseif name == "content-length" and type(v) == "string" and v:match("^%d+$") then
        body = rest:sub(1, tonumber(v))
      end
    end
  end
  local event, err = client:notification(headers, body)
  if not event then ctx:api_failure("notification", err) end
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "notification", event = event }
    return EXIT_OK
  end
  ctx:out("Notification verified and decrypted\n")
  for _, k in ipairs { "id", "event_type", "summary", "create_time", "resource_type", "original_type" } do
    if event[k] then ctx:out(("  %-14s %s\n"):format(k .. ":", event[k])) end
  end
  ctx:out("resource (decrypted):\n", event.plaintext, "\n")
  return EXIT_OK
end

return M
