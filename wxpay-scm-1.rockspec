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

-- OpenSSL 3 and libcurl are found with pkg-config by the Makefile's rock-* targets
-- (`make rock-check` says which -dev package is missing).  Not external_dependencies:
-- LuaRocks looks for curl/curl.h under $(CURL_INCDIR)/ only, while Debian and Ubuntu keep it
-- in the multiarch directory /usr/include/<triplet>/, which the compiler (and pkg-config)
-- search by themselves; a fixed incdir would tie the rockspec to one architecture.
-- build.type "make" rather than "builtin": builtin compiles into the source tree
-- (src/*.o, wxpay/core.so); rock-install compiles straight into $(LIBDIR), so
-- `luarocks make` leaves a clone exactly as it was.
build = {
  type = "make",
  build_target = "rock-check",
  build_variables = { CFLAGS = "$(CFLAGS)", LUA_INCDIR = "$(LUA_INCDIR)" },
  install_target = "rock-install",
  install_variables = { CFLAGS = "$(CFLAGS)", LUA_INCDIR = "$(LUA_INCDIR)", LIBDIR = "$(LIBDIR)" },
  install = {
    lua = {
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
      ["wxpay.certcache"] = "lua/wxpay/certcache.lua",
      ["wxpay.orders"] = "lua/wxpay/orders.lua",
      ["wxpay.cancel"] = "lua/wxpay/cancel.lua",
      ["wxpay.batch"] = "lua/wxpay/batch.lua",
      ["wxpay.pace"] = "lua/wxpay/pace.lua",
      ["wxpay.notification"] = "lua/wxpay/notification.lua",
      ["wxpay.ngx_notify"] = "lua/wxpay/ngx_notify.lua",
      ["wxpay.transport"] = "lua/wxpay/transport.lua",
      ["wxpay.cosocket"] = "lua/wxpay/cosocket.lua",
      ["wxpay.cli"] = "lua/wxpay/cli.lua",
      ["wxpay.cli.args"] = "lua/wxpay/cli/args.lua",
      ["wxpay.cli.output"] = "lua/wxpay/cli/output.lua",
      ["wxpay.cli.notify"] = "lua/wxpay/cli/notify.lua",
      ["wxpay.cli.help"] = "lua/wxpay/cli/help.lua",
    },
    bin = { wxpay = "bin/wxpay" },
  },
}

test_dependencies = { "busted" }
test = { type = "busted" }
