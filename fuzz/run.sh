#!/bin/sh
# make fuzz: run.sh SECONDS TARGET...
# For each target: replay fuzz/regressions/<target>/* (every input that ever
# crashed it), then fuzz for SECONDS on a scratch copy of fuzz/corpus/<target>
# (fuzz/corpus-work/, git-ignored).  A crash leaves its input under
# fuzz/build/artifacts/<target>/: fix the bug, then keep the input in
# fuzz/regressions/<target>/.  Ends with "fuzz: N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 2
secs=${1:-30}; shift
passed=0; failed=0
mkdir -p fuzz/build/logs
targets="$*"
for t in $targets; do
    bin=fuzz/build/fuzz_$t
    log=fuzz/build/logs/$t.log
    ok=1
    if [ ! -x "$bin" ]; then
        echo "== fuzz $t: $bin is missing"; failed=$((failed + 1)); continue
    fi
    dict=""
    [ -f "fuzz/dict/$t.dict" ] && dict="-dict=fuzz/dict/$t.dict"
    # 1. regressions, each input run once
    #    (dot files such as .gitkeep are not inputs)
    nreg=0
    set -- ; for f in fuzz/regressions/"$t"/*; do [ -f "$f" ] && set -- "$@" "$f"; done
    if [ $# -gt 0 ]; then
        nreg=$#
        if ! "$bin" "$@" > "$log.replay" 2>&1; then
            echo "== fuzz $t: a regression input crashes again:"; tail -n 30 "$log.replay"; ok=0
        fi
    fi
    # 2. fuzzing on a scratch copy of the seed corpus
    work=fuzz/corpus-work/$t
    art=fuzz/build/artifacts/$t
    rm -rf "$work"; mkdir -p "$work" "$art"
    [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
    seeds=$(ls "$work" | wc -l)
    if [ $ok -eq 1 ]; then
        "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
            -max_len=8192 -artifact_prefix="$art/" $dict "$work" > "$log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            echo "== fuzz $t: failed (exit $rc); the input is in $art/:"
            grep -aE 'ERROR|SUMMARY|property failed|runtime error|Test unit written' "$log" | head -n 20
            ok=0
        fi
    fi
    execs=$(grep -a 'stat::number_of_executed_units' "$log" 2>/dev/null | grep -oE '[0-9]+' | tail -n 1)
    cov=$(grep -aE '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" 2>/dev/null | tail -n 1 | grep -oE 'cov: [0-9]+' | head -n 1)
    now=$(ls "$work" | wc -l)
    if [ $ok -eq 1 ]; then
        passed=$((passed + 1))
        echo "== fuzz $t: ok, ${execs:-0} executions in ${secs}s, ${cov:-cov: ?}, corpus $seeds -> $now, $nreg regression input(s) replayed"
    else
        failed=$((failed + 1))
        echo "== fuzz $t: FAILED (${execs:-0} executions; log $log)"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
