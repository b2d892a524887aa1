--- wxpay: WeChat Pay Global API v3 "Revoke Order" and the protocol around it.
-- This file only wires the public surface; each job lives in its own module
-- (see wxpay.client for the map).  Must not: hold logic of its own.
--
--   local wxpay = require "wxpay"
--   local client = assert(wxpay.new{ mchid = "1900000109", serial_no = "…",
--     private_key = "apiclient_key.pem", platform_certs = { "wechatpay.pem" } })
--   local ok, err = client:revoke{ out_trade_no = "1217752501201407033233368018" }
--
-- The reference is docs/api.md.
local core = require "wxpay.core"
local errors = require "wxpay.errors"
local config = require "wxpay.config"
local Client = require "wxpay.client"

local M = {
  _VERSION = core._VERSION,
  errors = errors,
  load_config = config.load_config, -- the options table a config file holds
  Client = Client,
}

--- wxpay.new(opts | config_path) -> client | nil, err
function M.new(opts)
  local settings, s, store = config.load(opts)
  if not settings then return nil, s end
  return Client.new(settings, s, store)
end

return M
