# make bench: performance figures for issue 9 (never part of `make test`).
# Builds the C core for Lua 5.4 and LuaJIT, starts a sandbox of its own and
# runs bench/run.lua against it: prints a table, writes bench/results.json.
# May install hyperfine (apt), nodejs/npm (apt, only when missing) and the two
# npm peers (into bench/peers/). See docs/bench.md.
#   BENCH_N=2000 BENCH_ROUNDS=3 BENCH_CLIENTS=1000 BENCH_SKIP="peers cold" make bench
# Needs strace for the syscalls-per-call figure (installed with apt when missing).

.PHONY: bench bench-lint

bench: deps
	@command -v strace >/dev/null 2>&1 || { echo "make bench: installing strace"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  (apt-get install -y -qq strace || (apt-get update -qq && apt-get install -y -qq strace)) >/dev/null 2>&1 \
	  || echo "make bench: strace unavailable: no syscalls-per-call figure"; }
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(MAKE) --no-print-directory build LUA=luajit
	@sh bench/run

bench-lint:
	luacheck -q bench
