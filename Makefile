# wxpay: WeChat Pay Global API v3 "Revoke Order" for Lua 5.4 and LuaJIT.
#
#   make            build wxpay/core.so for Lua 5.4 (make LUA=luajit for LuaJIT)
#   make test       lint + sandbox self-tests + busted under Lua 5.4 and LuaJIT
#   make demo       a real revoke against the bundled sandbox
#   make sandbox    run the sandbox in the foreground
#   make install    PREFIX=/usr/local DESTDIR= (LUA=luajit for the 5.1 tree; its command is wxpay-luajit)

LUA        ?= lua5.4
PREFIX     ?= /usr/local
DESTDIR    ?=
PYTHON     ?= /usr/bin/python3
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN       ?= -Wall -Wextra -Wno-unused-parameter
PKG_CONFIG ?= pkg-config

ifeq ($(LUA),luajit)
  LUA_ABI    := 5.1
  LUA_PC     := luajit
  BUILD      := build/luajit
else
  LUA_ABI    := $(patsubst lua%,%,$(LUA))
  LUA_PC     := lua$(LUA_ABI)
  BUILD      := build/$(LUA_ABI)
endif

LUA_INCDIR ?= $(patsubst -I%,%,$(filter -I%,$(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)))
LUA_LMOD   ?= $(PREFIX)/share/lua/$(LUA_ABI)
LUA_CMOD   ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LIBS       := -lcurl -lssl -lcrypto
# the command's name: wxpay for the default Lua 5.4, wxpay-luajit (wxpay-lua5.1, ...)
# for the others, so two installs into one PREFIX never replace each other
ifeq ($(LUA),lua5.4)
  WXPAY_BIN_NAME ?= wxpay
else
  WXPAY_BIN_NAME ?= wxpay-$(LUA)
endif

SRC  := src/wx_crypto.c src/wx_file.c src/wx_http.c src/wx_pool.c src/wxpay_core.c
HDR  := src/wx_core.h src/compat.h
SO   := $(BUILD)/wxpay/core.so
LMODS := $(wildcard lua/wxpay/*.lua)
LMODS_CLI := $(wildcard lua/wxpay/cli/*.lua)

# Debian packages the project needs (checked, installed only when missing).
# luajit2 / libluajit2-5.1-dev: the OpenResty LuaJIT that Debian's nginx lua
# module depends on (the plain luajit packages conflict with it).
DEPS := lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev libssl-dev \
        libcurl4-openssl-dev lua-cjson lua-busted lua-check openssl \
        python3 python3-cryptography nginx libnginx-mod-http-lua \
        pkg-config gcc make valgrind clang libclang-rt-14-dev procps curl \
        lua5.1 liblua5.1-0-dev luarocks strace

.PHONY: all deps build test lint demo sandbox install clean check-c bench rock-check rock-install

all: deps build

build: $(SO)

$(SO): $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -std=gnu99 -fPIC -fvisibility=hidden \
	  $(addprefix -I,$(LUA_INCDIR)) -shared -o $@ $(SRC) $(LIBS)

deps:
	@missing=""; for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || { echo "make deps: apt-get install failed"; exit 1; }; \
	fi

lint: deps
	luacheck -q lua spec examples bin/wxpay sandbox/cli.lua

test: deps
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(MAKE) --no-print-directory build LUA=luajit
	@sh tools/run-tests

demo: deps build
	@sh tools/demo

sandbox: deps
	@$(PYTHON) sandbox/server.py --dir $${SANDBOX_DIR:-.sandbox} --port $${PORT:-0}

install: build
	install -d $(DESTDIR)$(LUA_LMOD)/wxpay/cli $(DESTDIR)$(LUA_CMOD)/wxpay
	install -m 0644 $(LMODS) $(DESTDIR)$(LUA_LMOD)/wxpay/
	install -m 0644 $(LMODS_CLI) $(DESTDIR)$(LUA_LMOD)/wxpay/cli/
	install -m 0755 $(SO) $(DESTDIR)$(LUA_CMOD)/wxpay/core.so
	@if [ -f bin/wxpay ]; then install -d $(DESTDIR)$(PREFIX)/bin && \
	  sed '1s|.*|#!/usr/bin/env $(LUA)|' bin/wxpay > $(DESTDIR)$(PREFIX)/bin/$(WXPAY_BIN_NAME) && \
	  chmod 0755 $(DESTDIR)$(PREFIX)/bin/$(WXPAY_BIN_NAME) && \
	  echo "installed the command as $(PREFIX)/bin/$(WXPAY_BIN_NAME) (runs $(LUA))"; fi

# LuaRocks (wxpay-scm-1.rockspec, build.type "make"): check the C dependencies, then
# compile wxpay/core.so straight into the rock's LIBDIR: nothing is written into
# the source tree.  LuaRocks passes CFLAGS, LUA_INCDIR and LIBDIR.
ROCK_PC := libcurl openssl
rock-check:
	@$(PKG_CONFIG) --exists $(ROCK_PC) || { echo "wxpay: pkg-config finds no libcurl/openssl:" \
	  "install libcurl4-openssl-dev and libssl-dev (Debian/Ubuntu) or their equivalents"; exit 1; }
	@test -f "$(LUA_INCDIR)/lua.h" || { echo "wxpay: no lua.h in LUA_INCDIR=$(LUA_INCDIR):" \
	  "install the Lua headers (Debian: liblua5.1-0-dev, liblua5.4-dev)"; exit 1; }

rock-install: rock-check
	@test -n "$(LIBDIR)" || { echo "rock-install: LIBDIR is not set (run through luarocks)"; exit 1; }
	install -d "$(LIBDIR)/wxpay"
	$(CC) $(CFLAGS) $(WARN) -std=gnu99 -fPIC -fvisibility=hidden -I"$(LUA_INCDIR)" \
	  $$($(PKG_CONFIG) --cflags $(ROCK_PC)) -shared -o "$(LIBDIR)/wxpay/core.so" $(SRC) \
	  $$($(PKG_CONFIG) --libs $(ROCK_PC))

clean:
	rm -rf build .sandbox-test

# further targets (test-asan, test-valgrind, fuzz, bench...) live in mk/
-include mk/*.mk
