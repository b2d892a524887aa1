# make bench: performance figures for issue 9 (never part of `make test`).
# Builds the C core for Lua 5.4 and LuaJIT, starts a sandbox of its own and
# runs bench/run.lua against it: prints a table, writes bench/results.json.
# May install hyperfine (apt), nodejs/npm (apt, only when missing) and the two
# npm peers (into bench/peers/). See docs/bench.md.
#   BENCH_N=2000 BENCH_ROUNDS=3 BENCH_SKIP="peers cold" make bench

.PHONY: bench bench-lint

bench: deps
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(MAKE) --no-print-directory build LUA=luajit
	@sh bench/run

bench-lint:
	luacheck -q bench
