# make bench, issue 17's batch target (docs/batches.md): 450 paid orders
# revoked by one revoke_many against a sandbox limiting revokes at 150/s,
# under Lua 5.4 and LuaJIT. Also alone: make bench-batch.
#   BENCH_BATCH_N=450 BENCH_BATCH_LIMIT=150 make bench-batch
.PHONY: bench-batch

bench: bench-batch

bench-batch:
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(MAKE) --no-print-directory build LUA=luajit
	-@sh bench/ratelimit
