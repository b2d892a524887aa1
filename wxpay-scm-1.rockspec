rockspec_format = "3.0"
package = "wxpay"
version = "scm-1"

source = {
  url = "git+https://example.invalid/wxpay.git",  -- set to the project's repository when published
  branch = "main",
}

description = {
  summary = "WeChat Pay Global API v3 Revoke Order (and the protocol around it) for Lua 5.4 and LuaJIT",
  detailed = [[
A C core (OpenSSL 3 for RSA-SHA256 and AES-256-GCM, libcurl for HTTP) exposed as
wxpay.core, and a Lua client: signed requests, verified answers, platform
certificates, order query, cancel (revoke, retry, confirm) and revoke_many.
Uses cosockets inside OpenResty, so it never blocks an nginx worker.
]],
  license = "MIT",
  labels = { "wechatpay", "payments", "openresty" },
}

dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}

external_dependencies = {
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
  CURL = { header = "curl/curl.h", library = "curl" },
}

build = {
  type = "builtin",
  modules = {
    ["wxpay.core"] = {
      sources = { "src/wx_crypto.c", "src/wx_http.c", "src/wxpay_core.c" },
      libraries = { "curl", "ssl", "crypto" },
      incdirs = { "$(OPENSSL_INCDIR)", "$(CURL_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(CURL_LIBDIR)" },
    },
    ["wxpay"] = "lua/wxpay/init.lua",
    ["wxpay.errors"] = "lua/wxpay/errors.lua",
    ["wxpay.util"] = "lua/wxpay/util.lua",
    ["wxpay.config"] = "lua/wxpay/config.lua",
    ["wxpay.secrets"] = "lua/wxpay/secrets.lua",
    ["wxpay.client"] = "lua/wxpay/client.lua",
    ["wxpay.call"] = "lua/wxpay/call.lua",
    ["wxpay.verify"] = "lua/wxpay/verify.lua",
    ["wxpay.certificates"] = "lua/wxpay/certificates.lua",
    ["wxpay.keystore"] = "lua/wxpay/keystore.lua",
    ["wxpay.orders"] = "lua/wxpay/orders.lua",
    ["wxpay.cancel"] = "lua/wxpay/cancel.lua",
    ["wxpay.batch"] = "lua/wxpay/batch.lua",
    ["wxpay.pace"] = "lua/wxpay/pace.lua",
    ["wxpay.transport"] = "lua/wxpay/transport.lua",
    ["wxpay.cosocket"] = "lua/wxpay/cosocket.lua",
    ["wxpay.cli"] = "lua/wxpay/cli.lua",
    ["wxpay.cli.args"] = "lua/wxpay/cli/args.lua",
    ["wxpay.cli.output"] = "lua/wxpay/cli/output.lua",
  },
  install = {
    bin = { wxpay = "bin/wxpay" },
  },
}

test_dependencies = { "busted" }
test = { type = "busted" }
