# Reliability targets (docs/reliability.md): sanitizers, valgrind, fuzzing, soak.
#
#   make test-asan               ASan+UBSan build of the C core, busted suite under lua5.4 (ASAN_SPECS=)
#   make test-valgrind           memcheck over the busted suite under lua5.4 (VALGRIND_SPECS=)
#   make fuzz [FUZZ_SECONDS=30]  every libFuzzer target for that long, regressions replayed
#   make fuzz-build              only build the fuzz targets
#   make soak [SOAK_CALLS=20000] 20 000 revokes in one process, RSS growth must stay < 1 MB
#
# Each of test-asan, test-valgrind and fuzz ends with one line
# "<name>: N passed, N failed" and exits non-zero when anything failed.

.PHONY: test-asan test-valgrind fuzz fuzz-build soak asan-build

CLANG        ?= clang
LUA54_CFLAGS := $(shell $(PKG_CONFIG) --cflags lua5.4 2>/dev/null)
BUSTED       ?= /usr/bin/busted

# ---- ASan + UBSan -----------------------------------------------------------

ASAN_DIR     := build/asan
ASAN_SO      := $(ASAN_DIR)/wxpay/core.so
# a Lua 5.4 interpreter that carries the ASan runtime (fuzz/lua_host.c): no
# LD_PRELOAD, so the children specs start (curl, sh, python3) run unsanitized
ASAN_LUA     := $(ASAN_DIR)/lua5.4
ASAN_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all
ASAN_SPECS   ?= $(sort $(wildcard spec/*_spec.lua))
# Lua, curl and OpenSSL keep allocations until exit; leaks are valgrind's job.
# WXPAY_TEST_LUA: the interpreter specs use for their own Lua children.
ASAN_ENV      = ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
                UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 WXPAY_TEST_LUA=$(CURDIR)/$(ASAN_LUA)

asan-build: $(ASAN_SO) $(ASAN_LUA) $(ASAN_DIR)/busted.lua

$(ASAN_SO): $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(ASAN_FLAGS) $(WARN) -std=gnu99 -fPIC -fvisibility=hidden \
	  $(LUA54_CFLAGS) -shared -o $@ $(SRC) $(LIBS)

$(ASAN_LUA): fuzz/lua_host.c
	@mkdir -p $(dir $@)
	$(CLANG) $(ASAN_FLAGS) $(WARN) $(LUA54_CFLAGS) -o $@ fuzz/lua_host.c -llua5.4

# busted's configuration for the ASan build: our Lua, the ASan core.so
$(ASAN_DIR)/busted.lua: mk/reliability.mk
	@mkdir -p $(dir $@)
	@printf '%s\n' 'return { _all = { lpath = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua",' \
	  '  cpath = "./$(ASAN_DIR)/?.so", ["auto-insulate"] = true }, default = { verbose = true } }' > $@

# Runs each spec file in its own interpreter ($(1): suite name, $(2): command
# prefix, $(3): spec files, $(4): log dir); a crash, a sanitizer or memcheck
# report, or a missing busted summary counts as one more failure.
define run_specs
	@mkdir -p $(4); passed=0; failed=0; \
	for spec in $(3); do \
	  name=$$(basename $$spec .lua); log=$(4)/$$name.log; \
	  start=$$(date +%s); \
	  $(2) $$spec > $$log 2>&1; rc=$$?; \
	  line=$$(grep -aE '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' $$log | tail -n 1); \
	  ok=$$(echo "$$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+'); \
	  f=$$(echo "$$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+'); \
	  e=$$(echo "$$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+'); \
	  ok=$${ok:-0}; bad=$$(( $${f:-0} + $${e:-0} )); \
	  report=$$(grep -acE '^==[0-9]+== ?(ERROR: AddressSanitizer|ERROR: LeakSanitizer)|runtime error:|^==[0-9]+== (Invalid|Conditional|Use of uninit|Mismatched|Syscall param|Source and destination)|definitely lost: [1-9]|indirectly lost: [1-9]' $$log); \
	  if [ -z "$$line" ] || [ "$$report" -gt 0 ] || { [ $$rc -ne 0 ] && [ $$bad -eq 0 ]; }; then \
	    bad=$$((bad + 1)); \
	    echo "--- $$spec: rc=$$rc, sanitizer/memcheck reports: $$report (log: $$log)"; \
	    grep -aE -A12 '^==[0-9]+== ?ERROR|runtime error:|^==[0-9]+== (Invalid|Conditional|Use of uninit|Mismatched|Syscall)|definitely lost: [1-9]|indirectly lost: [1-9]' $$log | head -n 60; \
	    [ -n "$$line" ] || tail -n 20 $$log; \
	  fi; \
	  [ $$bad -gt 0 ] && [ -n "$$line" ] && grep -aE '^(Failure|Error) →' -A3 $$log | head -n 40; \
	  printf '== %s %s: %s passed, %s failed (%ss)\n' $(1) $$name $$ok $$bad $$(( $$(date +%s) - start )); \
	  passed=$$((passed + ok)); failed=$$((failed + bad)); \
	done; \
	echo "$(1): $$passed passed, $$failed failed"; \
	[ $$failed -eq 0 ]
endef

test-asan: asan-build
	@$(MAKE) --no-print-directory build LUA=lua5.4 >/dev/null
	@$(MAKE) --no-print-directory build LUA=luajit >/dev/null
	$(call run_specs,asan,$(ASAN_ENV) $(ASAN_LUA) $(BUSTED) -f $(ASAN_DIR)/busted.lua -o utfTerminal,$(ASAN_SPECS),$(ASAN_DIR)/logs)

# ---- valgrind memcheck ----------------------------------------------------------
# The whole suite (about 3.5 min on two cores).  If it grows too slow, the
# files that drive every C entry point (keys, signing, verification, base64,
# AES-GCM, sessions, header parsing, the multi handle, every failure path of
# an exchange) are: core faults hostile secrets certificates batch.
# pace_spec is left out: it times requests against a rate (Lua logic over C entry
# points the other specs already drive), and valgrind's 20-50x slowdown makes an
# unpaced client slower than the limit it must beat.  ASan runs it.
VALGRIND_SPECS ?= $(filter-out spec/pace_spec.lua,$(sort $(wildcard spec/*_spec.lua)))
VALGRIND_DIR   := build/valgrind
VALGRIND_SUPP  := fuzz/valgrind.supp
VALGRIND       ?= valgrind
VALGRIND_FLAGS ?= --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
                  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
                  --track-origins=no --num-callers=30 --suppressions=$(VALGRIND_SUPP)

test-valgrind:
	@$(MAKE) --no-print-directory build LUA=lua5.4 >/dev/null
	$(call run_specs,valgrind,$(VALGRIND) $(VALGRIND_FLAGS) lua5.4 $(BUSTED) -o utfTerminal,$(VALGRIND_SPECS),$(VALGRIND_DIR)/logs)

# ---- libFuzzer ------------------------------------------------------------------

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := b64 private_key public_key certificate verify aes_gcm header
FUZZ_BINS    := $(addprefix fuzz/build/fuzz_,$(FUZZ_TARGETS))
FUZZ_FLAGS   := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all -Isrc

fuzz-build: $(FUZZ_BINS)

fuzz/build/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(filter-out src/wxpay_core.c,$(SRC)) $(HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) $(WARN) -o $@ $< $(filter-out src/wxpay_core.c,$(SRC)) $(LIBS)

fuzz: fuzz-build
	@sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- soak -------------------------------------------------------------------------

SOAK_CALLS ?= 20000

soak:
	@$(MAKE) --no-print-directory build LUA=lua5.4 >/dev/null
	@LUA_PATH="./lua/?.lua;./lua/?/init.lua;./spec/?.lua;;" LUA_CPATH="./build/5.4/?.so;;" \
	  lua5.4 tools/soak.lua $(SOAK_CALLS)
