-- Sharing a certificate download (issue 14, parts 2-4 outside nginx):
-- shared_dict's config errors, one download at a time per client inside
-- revoke_many, and cache_dir (the download kept encrypted on disk,
-- re-authenticated on every load, planted or damaged files refused).
-- The nginx parts (shared_dict across 4 workers, 20 light threads) are in
-- the nginx suite (spec/nginx/driver.lua).
local wxpay = require "wxpay"
local core = require "wxpay.core"
local certcache = require "wxpay.certcache"
local cjson = require "cjson"
local H = require "helpers"

local sb

local function v3_options(over)
  over = over or {}
  local mode = over.mode
  over.mode = nil
  over.platform_certs = false
  over.apiv3_key = over.apiv3_key or sb.cfg.apiv3_key
  return sb:options(over, mode)
end

local function downloads() return sb:stats().downloads end

-- A logger that keeps warnings .
local function recorder()
  local lines = {}
  local function log(level, message)
    if level == "warn" then lines[#lines + 1] = message end
  end
  return log, lines
end

local function must_read(path)
  local d = H.read(path)
  if not d then error("cannot read " .. path, 2) end
  return d
end

local function shq(v) return "'" .. tostring(v):gsub("'", "'\\''") .. "'" end

local dirs = {}
local function tmpdir()
  local d = (H.sh("mktemp -d /tmp/wxpay-certshare.XXXXXX")):gsub("%s+$", "")
  dirs[#dirs + 1] = d
  return d
end

-- the record file of the sandbox's common-mode merchant in `dir`
local function record_file(dir, mchid)
  return dir .. "/" .. certcache.name(mchid or sb.cfg.mchid, sb.cfg.base_url) .. ".json"
end

local function cache_client(dir, over)
  local log, lines = recorder()
  over = over or {}
  over.cache_dir, over.logger = dir, log
  local c, err = wxpay.new(v3_options(over))
  assert(c, err and err.message)
  return c, lines
end

local function paid()
  return sb:order { out_trade_no = H.order_no("CD"), trade_state = "SUCCESS" }.out_trade_no
end

-- a record whose body is signed anew with the sandbox's platform key (a
-- genuine WeChat signature, as far as the client can tell)
local function signed_record(body, ts, serial)
  local key = assert(core.load_private_key(must_read(sb.cfg.dir .. "/creds/platform_key.pem")))
  local nonce = "N" .. ts
  local sig = assert(key:sign(ts .. "\n" .. nonce .. "\n" .. body .. "\n"))
  return cjson.encode { format = "wxpay-certificates/1", mchid = sb.cfg.mchid, base_url = sb.cfg.base_url,
    saved_at = ts, headers = { ["wechatpay-timestamp"] = tostring(ts), ["wechatpay-nonce"] = nonce,
      ["wechatpay-signature"] = sig, ["wechatpay-serial"] = serial }, body = body }
end


describe("sharing certificate downloads", function()
  setup(function() sb = H.sandbox("certshare") end)
  teardown(function()
    sb:stop()
    for _, d in ipairs(dirs) do
      if d:find("^/tmp/wxpay%-certshare%.") then H.sh("chmod -R u+rwx " .. shq(d) .. "; rm -rf " .. shq(d)) end
    end
  end)
  before_each(function() sb:reset() end)

  describe("shared_dict outside nginx", function()
    it("is a CONFIG_ERROR at wxpay.new, naming nginx", function()
      local c, err = wxpay.new(v3_options { shared_dict = "wxpay_certs" })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("nginx", err.message)
    end)
    it("cache_dir needs apiv3_key; shared_dict without it is still refused outside nginx", function()
      local c, err = wxpay.new(sb:options { cache_dir = "/tmp" })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("apiv3_key", err.message)
      c, err = wxpay.new(sb:options { shared_dict = "d" })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("nginx", err.message)
    end)
    it("must be a string", function()
      local c, err = wxpay.new(v3_options { shared_dict = 5 })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
    end)
  end)

  describe("cache_dir", function()
    it("is a CONFIG_ERROR when it is a file, a symlink, unwritable, open to others, or has no parent", function()
      local d = tmpdir()
      H.write(d .. "/file", "x")
      H.sh(("mkdir %s/ro %s/open %s/real && chmod 500 %s/ro && chmod 777 %s/open && ln -s %s/real %s/link")
        :format(shq(d), shq(d), shq(d), shq(d), shq(d), shq(d), shq(d)))
      local cases = { file = "not a directory", link = "symbolic link", ro = "not writable",
        open = "writable by group or others", ["none/sub"] = "parent directory does not exist" }
      for name, why in pairs(cases) do
        local c, err = wxpay.new(v3_options { cache_dir = d .. "/" .. name })
        assert.is_nil(c, name)
        assert.equal("CONFIG_ERROR", err.code)
        assert.matches(why, err.message, 1, true)
        assert.matches("cache_dir", err.message, 1, true)
      end
      local c, err = wxpay.new(v3_options { cache_dir = 7 })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
    end)

    it("keeps the download 0600 and encrypted in a 0700 directory: the next client does not download", function()
      local d = tmpdir() .. "/cache"
      local c1 = cache_client(d)
      assert.equal(tonumber("700", 8), core.file_mode(d))
      local d0 = downloads()
      assert.is_true(c1:revoke { out_trade_no = paid() })
      assert.equal(d0 + 1, downloads())
      c1:close()
      local file = record_file(d)
      assert.equal(tonumber("600", 8), core.file_mode(file))
      local text = must_read(file)
      assert.truthy(text:find("ciphertext", 1, true))
      assert.falsy(text:find(sb.cfg.apiv3_key, 1, true))
      assert.falsy(text:find("BEGIN", 1, true))        -- no PEM: neither a key nor a decrypted certificate
      for _, frag in ipairs(H.key_fragments(sb.cfg.private_key)) do assert.falsy(text:find(frag, 1, true)) end
      -- a later "process"
      local c2, warnings = cache_client(d)
      assert.is_true(c2:revoke { out_trade_no = paid() })
      local list = assert(c2:certificates())
      assert.equal(d0 + 1, downloads())
      assert.equal("download", list[1].source)
      assert.same({}, warnings)
      c2:close()
    end)

    -- Each spoils the record (or the file) a first client left, then a new
    -- client must warn, download once, succeed, and leave a good record.
    local function spoiled(name, spoil, want)
      it("refuses a cache file that " .. name .. ": a warning, one download, a good file again", function()
        local d = tmpdir()
        local c0 = cache_client(d)
        assert(c0:certificates())
        c0:close()
        local file = record_file(d)
        spoil(file, must_read(file))
        local c, warnings = cache_client(d)
        local d0 = downloads()
        assert.is_true(c:revoke { out_trade_no = paid() })
        assert.equal(d0 + 1, downloads())
        assert.equal(1, #warnings, table.concat(warnings, "\n"))
        assert.matches("ignoring the saved certificates", warnings[1], 1, true)
        assert.matches(want, warnings[1], 1, true)
        for _, w in ipairs(warnings) do assert.falsy(w:find(sb.cfg.apiv3_key, 1, true)) end
        c:close()
        -- the fresh download replaced it
        local c3, w3 = cache_client(d)
        assert(c3:certificates())
        assert.equal(d0 + 1, downloads())
        assert.same({}, w3)
        c3:close()
      end)
    end

    spoiled("is truncated", function(file, text) H.write(file, text:sub(1, math.floor(#text / 2))) end,
      "not a complete JSON record")
    spoiled("has one ciphertext byte changed (AES-GCM tag)", function(file, text)
      local rec = cjson.decode(text)
      local _, e = rec.body:find('"ciphertext":"', 1, true)
      local ch = rec.body:sub(e + 5, e + 5)
      rec.body = rec.body:sub(1, e + 4) .. (ch == "A" and "B" or "A") .. rec.body:sub(e + 6)
      H.write(file, cjson.encode(rec))
    end, "could not be decrypted")
    spoiled("has a forged signature", function(file, text)
      local rec = cjson.decode(text)
      local sig = rec.headers["wechatpay-signature"]
      rec.headers["wechatpay-signature"] = (sig:sub(1, 1) == "A" and "B" or "A") .. sig:sub(2)
      H.write(file, cjson.encode(rec))
    end, "signature does not verify")
    spoiled("claims a later saved time than it was signed at", function(file, text)
      local rec = cjson.decode(text)
      rec.saved_at = rec.saved_at + 6 * 3600
      H.write(file, cjson.encode(rec))
    end, "saved time does not match")
    spoiled("is a symlink to a good record elsewhere", function(file, text)
      local elsewhere = tmpdir() .. "/good.json"
      H.write(elsewhere, text)
      os.remove(file)
      H.sh(("ln -s %s %s"):format(shq(elsewhere), shq(file)))
    end, "symbolic link")
    spoiled("is from another merchant", function(file)
      local d2 = tmpdir()
      local other = cache_client(d2, { mode = "institutional" })
      assert(other:certificates())
      other:close()
      H.write(file, must_read(record_file(d2, sb.cfg.sp_mchid)))
    end, "saved for another merchant")
    spoiled("was encrypted under another APIv3 key", function(file)
      local other_key = ("Z"):rep(32)
      assert.equal(200, (sb:control("POST", "/apiv3_key", { key = other_key })))
      local d2 = tmpdir()
      local other = cache_client(d2, { apiv3_key = other_key })
      assert(other:certificates())
      other:close()
      sb:control("POST", "/apiv3_key", { key = cjson.null })
      H.write(file, must_read(record_file(d2)))
    end, "could not be decrypted")
    spoiled("holds only expired certificates (signed by WeChat all the same)", function(file, text)
      local st, extra = sb:control("POST", "/certificates/extra", { kind = "expired" })
      assert.equal(200, st)
      local d2 = tmpdir()
      local other = cache_client(d2)
      assert(other:certificates())
      other:close()
      local body = cjson.decode(cjson.decode(must_read(record_file(d2))).body)
      local entry
      for _, e in ipairs(body.data) do if e.serial_no == extra.serial then entry = e end end
      assert.is_table(entry)
      H.write(file, signed_record(cjson.encode { data = { entry } }, math.floor(core.time()), extra.serial))
      assert.truthy(text)
    end, "no valid certificate")

    it("without a logger the warning goes to stderr (outside nginx), and the call succeeds", function()
      local d = tmpdir()
      local c0 = cache_client(d .. "/cache")
      assert(c0:certificates())
      c0:close()
      H.write(record_file(d .. "/cache"), "{\"format\":")
      H.write(d .. "/opts.json", cjson.encode(v3_options { cache_dir = d .. "/cache" }))
      H.write(d .. "/p.lua", ([[
        package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
        package.cpath = "./%s/?.so;" .. package.cpath
        local c = assert(require("wxpay").new(require("cjson").decode(io.open(%q):read("*a"))))
        io.write(c:certificates() and "OK" or "FAIL")
      ]]):format(rawget(_G, "jit") and "build/luajit" or "build/5.4", d .. "/opts.json"))
      local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
      local out = H.sh(("%s %s 2>%s"):format(lua, shq(d .. "/p.lua"), shq(d .. "/err")))
      assert.equal("OK", out)
      local err = must_read(d .. "/err")
      assert.matches("^wxpay: warning: ignoring the saved certificates in cache_dir file", err)
      assert.falsy(err:find(sb.cfg.apiv3_key, 1, true))
    end)

    it("a record older than 12 h counts as due: one download, no warning", function()
      local d = tmpdir()
      local c0 = cache_client(d)
      assert(c0:certificates())
      c0:close()
      local file = record_file(d)
      local rec = cjson.decode(must_read(file))
      H.write(file, signed_record(rec.body, math.floor(core.time()) - 13 * 3600, rec.headers["wechatpay-serial"]))
      -- the same record 11 h old is still used
      local c, warnings = cache_client(d)
      local d0 = downloads()
      assert(c:certificates())
      assert.equal(d0 + 1, downloads())
      assert.same({}, warnings)
      c:close()
      H.write(file, signed_record(rec.body, math.floor(core.time()) - 11 * 3600, rec.headers["wechatpay-serial"]))
      c, warnings = cache_client(d)
      assert(c:certificates())
      assert.equal(d0 + 1, downloads())
      assert.same({}, warnings)
      c:close()
    end)

    it("a cache directory that breaks after wxpay.new: a warning, the call still succeeds", function()
      local d = tmpdir() .. "/c"
      local c, warnings = cache_client(d)
      H.sh("chmod 500 " .. shq(d))
      local d0 = downloads()
      assert.is_true(c:revoke { out_trade_no = paid() })
      assert.equal(d0 + 1, downloads())
      if H.sh("id -u"):match("^0") then
        assert.same({}, warnings)       -- root writes anyway
      else
        assert.equal(1, #warnings)
        assert.matches("could not keep the certificate download", warnings[1], 1, true)
      end
      c:close()
    end)

    it("tolerates 6 processes writing at once: every call succeeds, one good file, no temp files", function()
      local d = tmpdir()
      local script = d .. "/p.lua"
      H.write(script, ([[
        package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
        package.cpath = "./%s/?.so;" .. package.cpath
        local wxpay = require "wxpay"
        local cjson = require "cjson"
        local o = cjson.decode(io.open(%q):read("*a"))
        local c = assert(wxpay.new(o))
        local list, err = c:certificates()
        io.write(list and "OK" or ("FAIL " .. tostring(err)), "\n")
      ]]):format(rawget(_G, "jit") and "build/luajit" or "build/5.4", d .. "/opts.json"))
      local o = v3_options { cache_dir = d .. "/cache" }
      H.write(d .. "/opts.json", cjson.encode(o))
      local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
      local cmd = {}
      for i = 1, 6 do cmd[i] = ("%s %s > %s/out%d 2>&1 &"):format(lua, shq(script), shq(d), i) end
      H.sh(table.concat(cmd, " ") .. " wait")
      for i = 1, 6 do assert.equal("OK\n", H.read(d .. "/out" .. i)) end
      local names = H.sh("ls -A " .. shq(d .. "/cache"))
      assert.equal(certcache.name(sb.cfg.mchid, sb.cfg.base_url) .. ".json\n", names)
      local c, warnings = cache_client(d .. "/cache")
      local d0 = downloads()
      assert(c:certificates())
      assert.equal(d0, downloads())
      assert.same({}, warnings)
      c:close()
    end)

    it("20 runs of `wxpay query` with an APIv3-key-only config: 1 download (the CLI's default cache)", function()
      local home = tmpdir()
      local no = paid()
      local env = ("env -i PATH=%s HOME=%s WXPAY_MCHID=%s WXPAY_SERIAL_NO=%s WXPAY_PRIVATE_KEY=%s "
        .. "WXPAY_APIV3_KEY=%s WXPAY_BASE_URL=%s WXPAY_CA_FILE=%s"):format(shq(os.getenv("PATH")), shq(home),
        sb.cfg.mchid, sb.cfg.serial_no, shq(sb.cfg.private_key), shq(sb.cfg.apiv3_key), shq(sb.cfg.base_url),
        shq(sb.cfg.ca_file))
      local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
      local d0 = downloads()
      for i = 1, 20 do
        local out, ok = H.sh(("%s %s bin/wxpay query --out-trade-no %s 2>&1"):format(env, lua, no))
        assert(ok, "run " .. i .. ": " .. out)
        assert.matches("SUCCESS", out)
        assert.falsy(out:find(sb.cfg.apiv3_key, 1, true))
      end
      local d = downloads() - d0
      print(("\n  [certshare] 20 CLI runs (APIv3 key only, default cache) -> %d download(s)"):format(d))
      assert.equal(1, d)
      assert.equal(tonumber("700", 8), core.file_mode(home .. "/.cache/wxpay"))
      -- --no-cache: one more download each run; XDG_CACHE_HOME moves the cache
      assert(select(2, H.sh(("%s %s bin/wxpay query --no-cache --out-trade-no %s"):format(env, lua, no))))
      assert.equal(d0 + 2, downloads())
      local xdg = tmpdir()
      assert(select(2, H.sh(("%s XDG_CACHE_HOME=%s %s bin/wxpay query --out-trade-no %s")
        :format(env, shq(xdg), lua, no))))
      assert.equal(d0 + 3, downloads())
      assert.truthy(H.read(record_file(xdg .. "/wxpay")))
    end)
  end)

  describe("one download at a time per client", function()
    -- last in this block: the sandbox keeps the rotated key for the rest of the file
    it("revoke_many after a rotation: 20 coroutines, 1 download, all 20 revoked", function()
      local c = assert(wxpay.new(v3_options()))
      local list = {}
      for i = 1, 20 do
        list[i] = { out_trade_no = sb:order { out_trade_no = H.order_no("RM"), trade_state = "SUCCESS" }.out_trade_no }
      end
      assert.is_true(c:revoke(list[1]))                        -- first download
      local st, rot = sb:control("POST", "/rotate")
      assert.equal(200, st)
      local d0 = downloads()
      -- every answer is now signed by a serial the client does not know: the
      -- first coroutine downloads, the 19 others wait for it (yielding)
      local results = c:revoke_many(list, { concurrency = 20 })
      local d = downloads() - d0
      print(("\n  [certshare] revoke_many x20 after a rotation: %d download(s)"):format(d))
      for i = 1, 20 do assert.is_true(results[i] == true, "item " .. i .. ": " .. tostring(results[i])) end
      assert.equal(1, d)
      local serials = {}
      for _, e in ipairs(c:certificates()) do serials[e.serial_no] = true end
      assert.is_true(serials[rot.serial])
      c:close()
    end)
  end)
end)
