#!/bin/sh
# run-tests.sh -- runs every suite, counts TAP results, ends with "N passed, N failed".
# Usage: run-tests.sh [c|lua|cel|integration|asan]...   (no argument: all of them)
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
OUT=${TEST_OUT:-$ROOT/build/test-logs}
mkdir -p "$OUT"
SUITES=${*:-c lua cel integration asan}
PASS=0; FAIL=0

# count FILE: adds the TAP oks and not-oks of FILE (flat TAP) to the totals.
count() {
    p=$(grep -cE '^ok ' "$1"); f=$(grep -cE '^not ok ' "$1")
    PASS=$((PASS + p)); FAIL=$((FAIL + f))
    [ "$f" -gt 0 ] && grep -E -A4 '^not ok ' "$1" | head -60
    echo "  $2: $p passed, $f failed"
}
# count_c FILE NAME STATUS: a C unit test's TAP, which must end with its plan ("1..N",
# N = oks + not-oks) and exit 0; a crash, a sanitizer report or a lost stdout is a failure.
count_c() {
    count "$1" "$2"
    plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$1" | tail -1)
    if [ "$3" -ne 0 ] || [ "${plan:-x}" != "$((p + f))" ]; then
        [ "$f" -gt 0 ] && [ "${plan:-x}" = "$((p + f))" ] && return  # its not-oks already count
        FAIL=$((FAIL + 1))
        echo "  $2: exit status $3, plan ${plan:-missing} for $((p + f)) results:"
        tail -20 "$1"
    fi
}
# count_plain FILE NAME: reads a closing "N passed, N failed" line.
count_plain() {
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
    if [ -z "$line" ]; then FAIL=$((FAIL + 1)); echo "  $2: no result line (crashed?)"; tail -20 "$1"; return; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    PASS=$((PASS + p)); FAIL=$((FAIL + f))
    [ "$f" -gt 0 ] && grep -vE '^[0-9]+ passed' "$1" | head -60
    echo "  $2: $line"
}
# count_node FILE NAME: reads node:test's "# pass N" / "# fail N" summary.
count_node() {
    p=$(sed -n 's/^# pass \([0-9]*\)/\1/p' "$1" | tail -1); f=$(sed -n 's/^# fail \([0-9]*\)/\1/p' "$1" | tail -1)
    if [ -z "$p" ]; then FAIL=$((FAIL + 1)); echo "  $2: no summary (crashed?)"; tail -30 "$1"; return; fi
    PASS=$((PASS + p)); FAIL=$((FAIL + f))
    [ "$f" -gt 0 ] && grep -nE '^\s*not ok|error:|expected|actual|Error' "$1" | head -60
    echo "  $2: $p passed, $f failed"
}

for s in $SUITES; do
    case $s in
    c)
        echo "== C unit tests"
        for t in build/tests/test_*; do
            [ -x "$t" ] || continue
            "$t" > "$OUT/$(basename "$t").tap" 2>&1
            count_c "$OUT/$(basename "$t").tap" "$(basename "$t")" $?
        done ;;
    lua)
        echo "== Lua specs (busted)"
        dirs=$(ls -d spec/01-lua spec/03-plugins 2>/dev/null)
        if [ -n "$(find $dirs -name '*_spec.lua' 2>/dev/null)" ]; then
            busted --lua=lua5.4 -o TAP $dirs > "$OUT/busted.tap" 2>&1
            count "$OUT/busted.tap" busted
        fi ;;
    cel)
        echo "== CEL conformance"
        if [ -f spec/cel/conformance.lua ]; then
            data=../shared/cel-conformance; [ -d "$data" ] || data=spec/cel/testdata
            lua5.4 spec/cel/conformance.lua "$data"/*.textproto > "$OUT/cel.txt" 2>&1
            count_plain "$OUT/cel.txt" cel-conformance
        fi ;;
    integration|asan)
        bin=$ROOT/build/lunagate; tag=integration
        if [ "$s" = asan ]; then bin=$ROOT/build-asan/lunagate; tag=integration-asan
            echo "== C unit tests (ASan+UBSan)"
            for t in build-asan/tests/test_*; do
                [ -x "$t" ] || continue
                "$t" > "$OUT/asan-$(basename "$t").tap" 2>&1
                count_c "$OUT/asan-$(basename "$t").tap" "asan-$(basename "$t")" $?
            done
        fi
        echo "== Integration specs ($tag)"
        files=$(ls spec/04-integration/*.test.mjs 2>/dev/null)
        [ -n "$files" ] || continue
        LUNAGATE_BIN=$bin ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            node --test --test-concurrency=1 --test-reporter=tap $files > "$OUT/$tag.tap" 2>&1
        count_node "$OUT/$tag.tap" "$tag" ;;
    esac
done
echo "logs in $OUT"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
