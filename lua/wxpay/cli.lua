--- The `wxpay` command: revoke, query and cancel orders by hand (docs/cli.md).
--
--   local cli = require "wxpay.cli"
--   os.exit(cli.main(arg, { root = "/path/to/checkout" }))   -- root: for --sandbox
--
-- Exit status: 0 done, 1 API or network failure, 2 usage or configuration error.
-- Must not: print key material or the APIv3 key (everything goes through
-- cli/output.lua's redaction).
--
-- The parts: wxpay.cli.args (help, options, configuration layers),
-- wxpay.cli.output (writing, redaction, Failures); this file runs commands.
local cjson = require "cjson.safe"
local output = require "wxpay.cli.output"
local cli_args = require "wxpay.cli.args"

local M = {}

local PROGRAM = output.PROGRAM
local EXIT_OK, EXIT_API, EXIT_USAGE = output.EXIT_OK, output.EXIT_API, output.EXIT_USAGE
local STATES, Failure, fail, usage_error, config_error = output.STATES, output.Failure, output.fail,
  output.usage_error, output.config_error
local json_encode, is_pem, parse_iso8601, LEVELS = output.json_encode, output.is_pem,
  output.parse_iso8601, output.LEVELS
local COMMANDS, show_value, check_args = cli_args.COMMANDS, cli_args.show_value, cli_args.check_args
local Ctx = output.Ctx
local escape = require("wxpay.errors").escape   -- one line: newlines in answers shown too

M.sh = output.sh        -- the spec helpers' shell runner
M.STATES = STATES
M.USAGE, M.COMMAND_HELP = cli_args.USAGE, cli_args.COMMAND_HELP
M.parse, M.configure = cli_args.parse, cli_args.configure

-------------------------------------------------------------------------------
-- Reporting
-------------------------------------------------------------------------------

local function order_label(a)
  if a.out_trade_no then return "out_trade_no " .. a.out_trade_no end
  return "transaction_id " .. a.transaction_id
end

local function error_fields(err, errors)
  local info = errors.info(err.code)
  return {
    code = err.code, message = err.message, status = err.status, request_id = err.request_id,
    retryable = err.retryable, attempts = err.attempts, verified = err.verified, detail = err.detail,
    description = info.description, action = info.action,
  }
end

-- An API failure from the library: exit 1, or 2 for our own inputs.
function Ctx:api_failure(what, err)
  local errors = self.wxpay.errors
  local exit = (err.code == errors.CONFIG_ERROR or err.code == errors.INVALID_ARGUMENT) and EXIT_USAGE or EXIT_API
  fail(exit, err.code, err.message, { api = error_fields(err, errors), what = what })
end

-------------------------------------------------------------------------------
-- Commands
-------------------------------------------------------------------------------

local function call_args(a)
  return { out_trade_no = a.out_trade_no, transaction_id = a.transaction_id, sub_mchid = a.sub_mchid }
end

local function state_hint(state, a)
  local id = a.out_trade_no and ("--out-trade-no " .. a.out_trade_no) or ("--transaction-id " .. a.transaction_id)
  if state == "SUCCESS" then
    return "to give the money back within 7 days: wxpay revoke " .. id
  elseif state == "NOTPAY" or state == "USERPAYING" or state == "PAYERROR" then
    return "not final: wxpay cancel " .. id .. " closes it"
  end
end

local CMD = {}

function CMD.query(ctx, client, a)
  local order, info = client:query(call_args(a))
  if not order then ctx:api_failure("query", info) end
  local state = order.trade_state
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "query", trade_state = state, meaning = STATES[state],
      final = state == "REVOKED" or state == "CLOSED", order = order, request_id = info.request_id }
  else
    ctx:out(("Order %s\n"):format(order_label(a)))
    ctx:print_order(order)
    if info.request_id then ctx:out("  request id:     ", info.request_id, "\n") end
    local hint = state_hint(state, a)
    if hint then ctx:out("  next:           ", hint, "\n") end
  end
  return EXIT_OK
end

function CMD.revoke(ctx, client, a)
  local ok, meta = client:revoke(call_args(a))
  if not ok then ctx:api_failure("revoke", meta) end
  local order, qinfo = client:query(call_args(a))
  local qerr = not order and qinfo or nil   -- on success the second value is the query's meta
  local state = order and order.trade_state
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "revoke", revoked = true, trade_state = state or cjson.null,
      meaning = state and STATES[state] or cjson.null, order = order or cjson.null,
      request_id = meta.request_id, query_error = qerr and error_fields(qerr, ctx.wxpay.errors) or nil }
  else
    ctx:out(("Revoke accepted for order %s (HTTP 204, request id %s).\n"):format(order_label(a),
      tostring(meta.request_id)))
    if order then
      ctx:print_order(order)
    else
      ctx:out("  state:          unknown: the follow-up query failed (", tostring(qerr), ")\n")
    end
  end
  return EXIT_OK
end

function CMD.cancel(ctx, client, a)
  local args = call_args(a)
  args.paid_at, args.deadline_ms = a.paid_at, a.deadline_ms
  local state, info = client:cancel(args)
  if not state then ctx:api_failure("cancel", info) end
  info = info or {}
  local order = info.order
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "cancel", result = state, trade_state = state,
      meaning = STATES[state], confirmed = info.confirmed == true, attempts = info.attempts,
      order = order or cjson.null }
  else
    ctx:out(("Order %s is now %s: %s.\n"):format(order_label(a), state, (STATES[state]:gsub("^[^:]*: ", ""))))
    ctx:out(("  %d revoke attempt(s); %s\n"):format(info.attempts or 0, info.confirmed
      and "the final state was confirmed by an order query"
      or "the final state could not be confirmed by a query (run wxpay query to check)"))
    if order then ctx:print_order(order) end
  end
  return EXIT_OK
end

function CMD.certificates(ctx, client)
  local list, err = client:certificates()
  if not list then ctx:api_failure("certificates", err) end
  local now = os.time()
  for _, c in ipairs(list) do
    local nb, na = parse_iso8601(c.effective_time), parse_iso8601(c.expire_time)
    if na and na < now then c.status = "expired"
    elseif nb and nb > now then c.status = "not yet valid"
    else c.status = "valid" end
    if na and na >= now then c.days_left = math.floor((na - now) / 86400) end
  end
  if ctx.args.json then
    ctx:emit_json { ok = true, command = "certificates", count = #list, certificates = list }
    return EXIT_OK
  end
  ctx:out(("%d key(s) to verify answers with:\n"):format(#list))
  for _, c in ipairs(list) do
    local validity = c.effective_time and (c.effective_time .. " .. " .. (c.expire_time or "?")) or "no validity period"
    ctx:out(("  %s  %-10s %s  %s%s\n"):format(c.serial_no, c.source or "?", validity, c.status,
      c.days_left and (" (%d days left)"):format(c.days_left) or ""))
  end
  return EXIT_OK
end

function CMD.config(ctx, client, _, opts, source)
  local keys = {}
  for k in pairs(opts) do if k ~= "logger" then keys[#keys + 1] = k end end
  table.sort(keys)
  if ctx.args.json then
    local cfg = {}
    for _, k in ipairs(keys) do cfg[k] = { value = show_value(k, opts[k]), source = source[k] } end
    ctx:emit_json { ok = true, command = "config", client = tostring(client), config = cfg }
    return EXIT_OK
  end
  ctx:out("Configuration is usable: ", tostring(client), "\n")
  for _, k in ipairs(keys) do
    ctx:out(("  %-15s %-45s %s\n"):format(k, show_value(k, opts[k]), source[k] or ""))
  end
  return EXIT_OK
end

-- wxpay notification: verify and decrypt a saved notification (cli/notify.lua)
CMD.notification = require("wxpay.cli.notify").run

-------------------------------------------------------------------------------
-- main
-------------------------------------------------------------------------------

function Ctx:report_failure(f)
  local cmd = self.args and self.args.command
  if self.json then
    local e = f.api or { code = f.code, message = f.message }
    if not f.api and f.code == "CONFIG_ERROR" and self.wxpay then
      e.action = self.wxpay.errors.info("CONFIG_ERROR").action
    end
    self:emit_json { ok = false, command = cmd or cjson.null, exit_code = f.exit, error = e }
  end
  if f.usage then
    self:err(PROGRAM, ": ", f.message, "\n")
    self:err(("Try '%s%s --help'.\n"):format(PROGRAM, f.command and COMMANDS[f.command] and (" " .. f.command) or ""))
    return f.exit
  end
  if f.api then
    local e = f.api
    -- the answer's text stays on its line: its newlines too are shown as \x0a
    self:err(("%s: %s failed: %s: %s\n"):format(PROGRAM, f.what, escape(e.code), escape(e.message)))
    if e.status then self:err("  HTTP status: ", e.status, "\n") end
    if e.request_id then self:err("  request id:  ", escape(e.request_id), "\n") end
    if e.attempts then self:err("  attempts:    ", e.attempts, "\n") end
    if e.verified == false then self:err("  note:        the answer was not verified: do not trust it\n") end
    if e.detail then
      local d = json_encode(e.detail)
      if #d < 500 then self:err("  detail:      ", d, "\n") end
    end
    self:err("  meaning:     ", e.description, "\n")
    self:err("  advice:      ", e.action, "\n")
    return f.exit
  end
  if f.code == "CONFIG_ERROR" then
    self:err(PROGRAM, ": configuration error: ", f.message, "\n")
    if f.bare then return f.exit end
    if self.sources then self:err("  values from: ", self.sources, "\n") end
    self:err("  advice:      fix that value in the config file, the WXPAY_* environment or the flags "
      .. "(flags override the environment, which overrides the file); 'wxpay config' shows them\n")
    return f.exit
  end
  self:err(PROGRAM, ": ", f.message, "\n")
  return f.exit
end

-- --sandbox and --seed live in the checkout's sandbox/cli.lua, which
-- installed copies do not have.
function Ctx:sandbox_tool()
  local root = self.root
  local file = root and (root .. "/sandbox/cli.lua")
  if not (file and output.exists(root .. "/sandbox/ctl") and output.exists(file)) then
    fail(EXIT_USAGE, "SANDBOX_UNAVAILABLE", "--sandbox works only from a source checkout of wxpay "
      .. "(run its bin/wxpay): sandbox/ctl was not found beside this program")
  end
  self.sandbox_mod = self.sandbox_mod or dofile(file)
  return self.sandbox_mod
end

local function describe_sources(source)
  local seen, list = {}, {}
  for _, s in pairs(source) do
    if not seen[s] then seen[s] = true; list[#list + 1] = s end
  end
  table.sort(list)
  return #list > 0 and table.concat(list, "; ") or "nothing"
end

function Ctx:run(argv)
  local a = M.parse(argv)
  self.args = a
  self.json = a.json
  if a.version then
    local wxpay = require "wxpay"
    local core = require "wxpay.core"
    local lua = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION
    if a.json then
      self:emit_json { ok = true, version = wxpay._VERSION, lua = lua, libcurl = core.curl_version }
    else
      self:out(("wxpay %s (%s, libcurl %s)\n"):format(wxpay._VERSION, lua, tostring(core.curl_version)))
    end
    return EXIT_OK
  end
  if a.help then
    self:out(a.command and M.COMMAND_HELP[a.command] or M.USAGE)
    return EXIT_OK
  end
  if not a.command then usage_error("no command given (revoke, query, cancel, certificates, config, notification)") end
  check_args(a)

  local wxpay = require "wxpay"
  self.wxpay = wxpay
  local getenv = self.getenv
  local sandbox_cfg
  if a.sandbox then
    local sb = self:sandbox_tool().start(self)
    sandbox_cfg = { serial_no = sb.serial_no, private_key = sb.private_key,
      platform_certs = { sb.platform_cert }, apiv3_key = sb.apiv3_key, base_url = sb.base_url,
      ca_file = sb.ca_file }
    if a.sub_mchid then sandbox_cfg.sp_mchid = sb.sp_mchid else sandbox_cfg.mchid = sb.mchid end
  end
  local opts, source = M.configure(a, getenv, sandbox_cfg)
  self:secret(opts.apiv3_key)
  if is_pem(opts.private_key) then   -- inline key text: never echo any of it
    for line in opts.private_key:gmatch("[^\r\n]+") do
      if not line:find("-----", 1, true) then self:secret(line) end
    end
  end
  if next(opts) == nil then
    fail(EXIT_USAGE, "CONFIG_ERROR", "no configuration found: give --config FILE, or set WXPAY_MCHID, "
      .. "WXPAY_SERIAL_NO, WXPAY_PRIVATE_KEY and WXPAY_PLATFORM_CERT (or WXPAY_APIV3_KEY), "
      .. "or create ~/.config/wxpay/config (see 'wxpay --help')", { bare = true })
  end
  self.sources = describe_sources(source)

  -- downloaded certificates kept for the next run (docs/scaling.md)
  if a.no_cache then
    opts.cache_dir, source.cache_dir = nil, nil
  elseif opts.cache_dir == nil and opts.apiv3_key and not a.sandbox then
    local dir = cli_args.default_cache_dir(getenv)
    local ok, why = false, "neither XDG_CACHE_HOME nor HOME is set"
    if dir then
      local certcache = require "wxpay.certcache"
      ok, why = certcache.check_dir(dir)
      if not ok and tostring(why):find("parent directory does not exist", 1, true) then
        ok, why = certcache.check_dir(dir:match("^(.*)/[^/]+$"))     -- ~/.cache itself
        if ok then ok, why = certcache.check_dir(dir) end
      end
    end
    if ok then
      opts.cache_dir, source.cache_dir = dir, "default"
    else
      self:err(PROGRAM, ": warning: downloading certificates without a cache (--no-cache hides this): ",
        tostring(why), "\n")
    end
  end
  local level = a.verbose and LEVELS.debug or (a.command == "cancel" and LEVELS.info or LEVELS.warn)
  opts.logger = self:logger(level)
  local client, err = wxpay.new(opts)
  if not client then config_error(err.message) end
  self.client = client
  if a.seed then self:sandbox_tool().seed(self, a, opts) end
  return CMD[a.command](self, client, a, opts, source)
end

--- Runs the command line `argv` (like the global `arg`); returns the exit status.
-- `env.root`: the source checkout (enables --sandbox); `env.getenv`: os.getenv.
function M.main(argv, env)
  env = env or {}
  local ctx = setmetatable({ root = env.root, getenv = env.getenv or os.getenv, secrets = {} }, Ctx)
  local list = {}
  for i = 1, #argv do
    list[i] = argv[i]
    if argv[i] == "--json" then ctx.json = true end
  end
  -- a closure: Lua 5.1's xpcall passes no extra arguments to the function
  local ok, res = xpcall(function() return ctx:run(list) end, function(e)
    if getmetatable(e) == Failure then return e end
    return setmetatable({ exit = EXIT_API, code = "INTERNAL_ERROR",
      message = "internal error: " .. tostring(e), trace = debug.traceback() }, Failure)
  end)
  if ctx.client then ctx.client:close() end
  if ctx.sandbox_dir then ctx:sandbox_tool().stop(ctx) end
  if ok then
    io.stdout:flush()
    return res
  end
  local code = ctx:report_failure(res)
  if res.trace and ctx.args and ctx.args.verbose then ctx:err(res.trace, "\n") end
  io.stdout:flush()
  return code
end

return M