#!/bin/sh
# run.sh -- lunagate benchmark: wrk against a static nginx upstream, directly, through nginx
# as a reference reverse proxy, and through lunagate.  `make bench` runs it.
# SPDX-License-Identifier: MIT
#
# Everything runs on 127.0.0.1 from a temp dir that is removed on exit (nginx is our own
# instance with its own prefix, pid file, error log and temp paths; the system nginx service
# is never touched).  Results are printed and appended to spec/bench/RESULTS.md.
# See spec/bench/README.md for the knobs (BENCH_* environment variables) and for how to add
# a scenario.

set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)

# ---- knobs -------------------------------------------------------------------------------
DURATION=${BENCH_DURATION:-3}          # seconds per measured run
WARMUP=${BENCH_WARMUP:-1}              # seconds of warmup before each measured run
ROUNDS=${BENCH_ROUNDS:-3}              # interleaved rounds; the best (highest req/s) is kept
WORKERS_LIST=${BENCH_WORKERS:-"1 2"}   # nginx worker_processes / lunagate workerThreads
CONNS_LIST=${BENCH_CONNS:-"50 1"}      # wrk connections
SCENARIOS=${BENCH_SCENARIOS:-plain}    # scenario_<name> functions below, run in order
PORT_BASE=${BENCH_PORT_BASE:-18700}    # first port tried; free ports are searched upward
LG_BIN=${BENCH_LUNAGATE_BIN:-$ROOT/build/lunagate}
LG_EXTRA=${BENCH_LUNAGATE_EXTRA:-}     # file: YAML merged into lunagate's `config:` block
LG_CONFIG=${BENCH_LUNAGATE_CONFIG:-}   # file: a whole lunagate config template (see README)
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
PIN=${BENCH_PIN:-1}                    # 0: no taskset at all
RESULTS=${BENCH_RESULTS:-$ROOT/spec/bench/RESULTS.md}   # /dev/null: do not record
NGINX=${BENCH_NGINX:-/usr/sbin/nginx}
BODY="lunagate-bench upstream ok"      # the upstream's fixed response body

for t in "$NGINX" wrk curl; do
    command -v "$t" >/dev/null 2>&1 || { echo "bench: $t not found (make deps installs it)"; exit 1; }
done

# (A neutral name: other people's cleanups of "lunagate" processes must not hit our nginx.)
TMP=$(mktemp -d /tmp/lgbench.XXXXXX) || exit 1
chmod 755 "$TMP"                       # nginx workers run as nobody when we are root
ROWS=$TMP/rows.tsv                     # scenario workers conns target rps p50_us p99_us errors
NOTES=$TMP/notes.txt                   # free-form lines printed under the table
: >"$ROWS"; : >"$NOTES"
PIDS=""                                # every server we started, for cleanup
PROCS=$TMP/procs.txt                   # "pid name" of the servers running now
: >"$PROCS"
track() { PIDS="$PIDS $1"; echo "$1 $2" >>"$PROCS"; }  # track PID NAME

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

note() { echo "$*" | tee -a "$NOTES"; }

# ---- CPU layout --------------------------------------------------------------------------
# wrk always runs pinned to the last CPU so every row gets the same load generator.  With at
# least 4 CPUs the proxy under test gets CPUs 0..W-1, the upstream the CPU after those, and
# wrk the last one, so they never share a core.  With fewer CPUs (e.g. 2) only wrk is pinned
# and the upstream and the proxy share the remaining CPUs with it under the normal scheduler,
# the same for nginx and lunagate.
NCPU=$(nproc 2>/dev/null || echo 1)
pin_wrk() { [ "$PIN" = 1 ] && [ "$NCPU" -gt 1 ] && echo "taskset -c $((NCPU - 1))"; }
pin_proxy() {  # $1 = workers
    [ "$PIN" = 1 ] && [ "$NCPU" -ge $(($1 + 2)) ] && echo "taskset -c 0-$(($1 - 1))"
}
pin_upstream() {  # $1 = proxy workers
    [ "$PIN" = 1 ] && [ "$NCPU" -ge $(($1 + 2)) ] && echo "taskset -c $1"
}
if [ "$PIN" != 1 ] || [ "$NCPU" -le 1 ]; then PINNING="none"
elif [ "$NCPU" -ge 4 ]; then PINNING="wrk on CPU $((NCPU - 1)), proxy on CPUs 0..W-1, upstream on CPU W"
else PINNING="wrk on CPU $((NCPU - 1)); upstream and proxies unpinned ($NCPU CPUs)"; fi

# ---- ports -------------------------------------------------------------------------------
NEXT_PORT=$PORT_BASE
port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
alloc_port() {  # alloc_port VAR: sets VAR to a free 127.0.0.1 port (no subshell: NEXT_PORT moves on)
    while ! port_free "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    eval "$1=$NEXT_PORT"; NEXT_PORT=$((NEXT_PORT + 1))
}

# alive PID: 0 while PID runs (an exited child stays a zombie until waited for).
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# wait_http URL SECONDS PID: 0 once URL answers 2xx, 1 on timeout or if PID died.
wait_http() {
    i=0
    while [ "$i" -lt $(($2 * 10)) ]; do
        alive "$3" || return 1
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

stop_pid() {  # $1 = pid; SIGTERM, then SIGKILL after 3 s
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    PIDS=$(echo " $PIDS " | sed "s/ $1 / /")
    sed -i "/^$1 /d" "$PROCS"
}

# rss_kb PID...: sum of VmRSS over the given pids (and, for nginx, its workers).
rss_kb() {
    t=0
    for p in "$@"; do
        for q in $p $(cat /proc/"$p"/task/*/children 2>/dev/null); do
            v=$(awk '/^VmRSS:/ {print $2}' /proc/"$q"/status 2>/dev/null)
            t=$((t + ${v:-0}))
        done
    done
    echo "$t"
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }  # mb KIB

# ---- nginx -------------------------------------------------------------------------------
# nginx_common NAME WORKERS: the part of an nginx.conf shared by upstream and proxy.
nginx_common() {
    d=$TMP/$1
    mkdir -p "$d"
    cat <<EOF
worker_processes $2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server_tokens off;
EOF
}

# nginx_start NAME CONF PINCMD: starts nginx in the foreground of a background job.
nginx_start() {
    $3 "$NGINX" -p "$TMP/$1" -e "$TMP/$1/error.log" -c "$2" -g 'daemon off;' \
        >"$TMP/$1/stdout.log" 2>&1 &
    NGINX_PID=$!
    track "$NGINX_PID" "nginx $1"
}

UP_PID=""; UP_PORT=""
upstream_start() {  # $1 = workers
    alloc_port UP_PORT
    conf=$TMP/upstream.conf
    { nginx_common upstream "$1"; cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT reuseport backlog=4096;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
EOF
    } >"$conf"
    nginx_start upstream "$conf" "$(pin_upstream "$1")"; UP_PID=$NGINX_PID
    wait_http "http://127.0.0.1:$UP_PORT/" 5 "$UP_PID" || {
        echo "bench: upstream nginx did not start:"; cat "$TMP/upstream/error.log"; exit 1; }
}

NGX_PID=""; NGX_PORT=""
nginx_proxy_start() {  # $1 = workers
    alloc_port NGX_PORT
    conf=$TMP/proxy.conf
    { nginx_common proxy "$1"; cat <<EOF
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGX_PORT reuseport backlog=4096;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$conf"
    nginx_start proxy "$conf" "$(pin_proxy "$1")"; NGX_PID=$NGINX_PID
    wait_http "http://127.0.0.1:$NGX_PORT/" 5 "$NGX_PID" || {
        echo "bench: nginx proxy did not start:"; cat "$TMP/proxy/error.log"; exit 1; }
}

# ---- lunagate ----------------------------------------------------------------------------
# lg_config WORKERS EXTRA_FILE: prints a lunagate config proxying every path to the upstream.
# With BENCH_LUNAGATE_CONFIG the template file is used instead, with @PORT@, @UPSTREAM@,
# @WORKERS@, @READY@ and @STATS@ substituted.  EXTRA_FILE (or BENCH_LUNAGATE_EXTRA) is YAML
# whose top-level keys are merged into the `config:` block (e.g. `logging: {...}`,
# `tracing: {...}`).
lg_config() {
    if [ -n "$LG_CONFIG" ]; then
        sed -e "s/@PORT@/$LG_PORT/g" -e "s/@UPSTREAM@/127.0.0.1:$UP_PORT/g" \
            -e "s/@WORKERS@/$1/g" -e "s/@READY@/127.0.0.1:$LG_READY/g" \
            -e "s/@STATS@/127.0.0.1:$LG_STATS/g" "$LG_CONFIG"
        return
    fi
    cat <<EOF
config:
  statsAddr: 127.0.0.1:$LG_STATS
  readinessAddr: 127.0.0.1:$LG_READY
  adminAddr: "off"
  workerThreads: $1
EOF
    [ -n "${2:-}" ] && sed 's/^/  /' "$2"
    cat <<EOF
binds:
- port: $LG_PORT
  listeners:
  - routes:
    - backends:
      - host: 127.0.0.1:$UP_PORT
EOF
}

# lg_start WORKERS [EXTRA_FILE]: 0 when lunagate is up and proxies the upstream's body;
# otherwise 1 with the reason in LG_SKIP (so the lunagate rows are left out, not faked).
LG_PID=""; LG_PORT=""; LG_READY=""; LG_STATS=""; LG_SKIP=""
lg_start() {
    LG_PID=""
    if [ ! -x "$LG_BIN" ]; then LG_SKIP="$LG_BIN not built"; return 1; fi
    alloc_port LG_PORT; alloc_port LG_READY; alloc_port LG_STATS
    extra=${2:-$LG_EXTRA}
    lg_config "$1" "$extra" >"$TMP/lunagate.yaml"
    $(pin_proxy "$1") "$LG_BIN" -f "$TMP/lunagate.yaml" >"$TMP/lunagate.log" 2>&1 &
    LG_PID=$!
    track "$LG_PID" lunagate
    if ! wait_http "http://127.0.0.1:$LG_READY/healthz/ready" "$READY_TIMEOUT" "$LG_PID"; then
        why="not ready within ${READY_TIMEOUT}s"
        alive "$LG_PID" || why="exited"
        LG_SKIP="$why (log: $(tail -n 1 "$TMP/lunagate.log" | cut -c1-120))"
        stop_pid "$LG_PID"; LG_PID=""; return 1
    fi
    got=$(curl -s --max-time 2 "http://127.0.0.1:$LG_PORT/" 2>/dev/null)
    if [ "$got" != "$BODY" ]; then
        LG_SKIP="ready but does not proxy (got: $(echo "$got" | head -c 80))"
        stop_pid "$LG_PID"; LG_PID=""; return 1
    fi
    LG_SKIP=""
    return 0
}

# ---- measuring ---------------------------------------------------------------------------
# parse_wrk FILE: prints "rps p50_us p99_us errors" from `wrk --latency` output.
parse_wrk() {
    awk '
    function us(v) {
        if (v ~ /us$/) return v + 0
        if (v ~ /ms$/) return (v + 0) * 1000
        if (v ~ /m$/)  return (v + 0) * 60000000
        if (v ~ /s$/)  return (v + 0) * 1000000
        return v + 0
    }
    $1 == "50%"  { p50 = us($2) }
    $1 == "99%"  { p99 = us($2) }
    /^Requests\/sec:/ { rps = $2 + 0 }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    END { printf "%.0f %.0f %.0f %d\n", rps, p50, p99, err }' "$1"
}

# measure SCENARIO WORKERS CONNS TARGET PORT [PATH]: one warmup and one measured wrk run;
# appends a row to $ROWS.
measure() {
    url="http://127.0.0.1:$5${6:-/}"
    threads=1
    $(pin_wrk) wrk -t"$threads" -c"$3" -d"${WARMUP}s" "$url" >/dev/null 2>&1
    out=$TMP/wrk-$1-$2-$3-$4.txt
    $(pin_wrk) wrk -t"$threads" -c"$3" -d"${DURATION}s" --latency "$url" >"$out" 2>&1
    # shellcheck disable=SC2046  # four numbers, split on purpose
    set -- "$1" "$2" "$3" "$4" $(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"
    while read -r p name; do
        alive "$p" || note "bench: $name (pid $p) died during $1 $2w $3c $4 (crash, or killed from outside)"
    done <"$PROCS"
    if [ "$5" = 0 ] || [ "$8" != 0 ]; then
        note "$1 $2w $3c $4: $(grep -E 'errors|Non-2xx|^[a-z].*:' "$out" | grep -v '^Running' | tr -s ' \n' ' ' | cut -c1-200)"
    fi
    printf '  %-8s workers %-2s conns %-3s %-9s %9s req/s  p50 %7s us  p99 %7s us  errors %s\n' "$@"
}

# ---- scenarios ---------------------------------------------------------------------------
# A scenario is a function scenario_<name>; BENCH_SCENARIOS="plain llm ..." picks them.  It
# starts what it needs with the helpers above, calls `measure <name> W C <target> <port>` for
# each row (targets "direct", "nginx" and "lunagate" get lunagate/nginx ratios in the
# report), and stops what it started.  Targets named otherwise (e.g. "lunagate+log") are
# listed in the table; ratios are computed for lunagate/nginx only.

# plain: the issue-2 table. Upstream direct, nginx -> upstream, lunagate -> upstream.
scenario_plain() {
    for w in $WORKERS_LIST; do
        upstream_start "$w"
        nginx_proxy_start "$w"
        have_lg=0
        if lg_start "$w"; then have_lg=1; else note "lunagate ($w workers) skipped: $LG_SKIP"; fi
        if [ "$have_lg" = 1 ] && [ "$w" = 2 ]; then
            LG_RSS_START=$(rss_kb "$LG_PID")
        fi
        for c in $CONNS_LIST; do
            r=1
            while [ "$r" -le "$ROUNDS" ]; do
                # odd rounds run direct, nginx, lunagate; even rounds the reverse, so neither
                # proxy always follows the other on a shared machine
                order="direct nginx lunagate"
                [ $((r % 2)) = 0 ] && order="lunagate nginx direct"
                for t in $order; do
                    case $t in
                    direct) measure plain "$w" "$c" direct "$UP_PORT" ;;
                    nginx) measure plain "$w" "$c" nginx "$NGX_PORT" ;;
                    lunagate) [ "$have_lg" = 1 ] && measure plain "$w" "$c" lunagate "$LG_PORT" ;;
                    esac
                done
                r=$((r + 1))
            done
        done
        if [ "$have_lg" = 1 ]; then
            sleep 1
            [ "$w" = 2 ] && note "lunagate RSS idle, 2 workers: $(mb "$LG_RSS_START") MB after start, $(mb "$(rss_kb "$LG_PID")") MB after load (target < 20 MB)"
            stop_pid "$LG_PID"
        fi
        [ "$w" = 2 ] && note "nginx proxy RSS idle, 2 workers (master + workers): $(mb "$(rss_kb "$NGX_PID")") MB"
        stop_pid "$NGX_PID"; stop_pid "$UP_PID"
    done
}

# Later scenarios go here, e.g.:
#   scenario_logging() {          # access log on vs off
#       printf 'logging:\n  format: json\n' >"$TMP/extra-log.yaml"
#       for w in $WORKERS_LIST; do
#           upstream_start "$w"
#           lg_start "$w" "$TMP/extra-log.yaml" || { note "skipped: $LG_SKIP"; stop_pid "$UP_PID"; continue; }
#           for c in $CONNS_LIST; do measure logging "$w" "$c" lunagate+log "$LG_PORT"; done
#           stop_pid "$LG_PID"; stop_pid "$UP_PID"
#       done
#   }
# The LLM path (mock provider), tracing on/off and plugins on/off follow the same shape with
# BENCH_LUNAGATE_CONFIG templates or extra `config:` YAML.

# make_var NAME: the value of a Makefile variable, as make computes it.
make_var() {
    # shellcheck disable=SC2016  # $($*) is make syntax, for make to expand
    printf 'lg-print-%%:\n\t@echo $($*)\n' | make -s --no-print-directory -f Makefile -f - "lg-print-$1"
}

# ---- micro benchmarks from other modules -------------------------------------------------
micro_benches() {
    if [ -f spec/bench/cel_bench.lua ]; then
        echo "== CEL micro benchmark (spec/bench/cel_bench.lua)"
        LUA_PATH="./lua/?.lua;./lua/?/init.lua;./plugins/?.lua;./spec/?.lua;;" \
            lua5.4 spec/bench/cel_bench.lua 2>&1 | tee -a "$NOTES"
    fi
    if [ -f spec/bench/metrics_bench.c ]; then
        echo "== metrics micro benchmark (spec/bench/metrics_bench.c)"
        if [ ! -f build/liblunagate.a ]; then
            note "metrics_bench: build/liblunagate.a missing (run make)"
            return
        fi
        # The Makefile's own flags, so the bench compiles exactly like the tests do.
        flags=$(make_var CFLAGS_ALL); libs=$(make_var LDLIBS_ALL)
        # shellcheck disable=SC2086
        if cc $flags -Ispec/bench -o "$TMP/metrics_bench" spec/bench/metrics_bench.c \
                build/liblunagate.a $libs >"$TMP/metrics_bench.cc.log" 2>&1; then
            "$TMP/metrics_bench" 2>&1 | tee -a "$NOTES"
        else
            note "metrics_bench: does not compile:"; head -20 "$TMP/metrics_bench.cc.log"
        fi
    fi
}

# ---- report ------------------------------------------------------------------------------
# best_rows: one row per (scenario, workers, conns, target), in first-run order: the round
# with the highest req/s.
best_rows() {
    awk -F '\t' '{
        k = $1 FS $2 FS $3 FS $4
        if (!(k in row)) order[++n] = k
        if (!(k in row) || $5 + 0 > rps[k]) { row[k] = $0; rps[k] = $5 + 0 }
    } END { for (i = 1; i <= n; i++) print row[order[i]] }' "$ROWS"
}

report() {
    best_rows >"$TMP/best.tsv"
    awk -F '\t' '
    function ms(u) { return sprintf("%.3f", u / 1000) }
    BEGIN {
        print "| scenario | workers | conns | target | req/s | p50 ms | p99 ms | errors |"
        print "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    }
    {
        printf "| %s | %s | %s | %s | %d | %s | %s | %s |\n", $1, $2, $3, $4, $5, ms($6), ms($7), $8
        k = $1 SUBSEP $2 SUBSEP $3
        rps[k, $4] = $5; p50[k, $4] = $6
        if (!(k in keys)) { keys[k] = 1; order[++n] = k }
    }
    END {
        print ""
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, f, SUBSEP)
            if (!((k, "lunagate") in rps) || !((k, "nginx") in rps) || rps[k, "nginx"] == 0) continue
            line = sprintf("- %s, workers %s, conns %s: lunagate/nginx req/s = %.2f (target >= 0.90)",
                           f[1], f[2], f[3], rps[k, "lunagate"] / rps[k, "nginx"])
            if (f[3] == 1 && ((k, "direct") in p50)) {
                an = p50[k, "nginx"] - p50[k, "direct"]; al = p50[k, "lunagate"] - p50[k, "direct"]
                if (an > 0)
                    line = line sprintf("; added p50 lunagate %.0f us / nginx %.0f us = %.2f (target <= 1.50)",
                                        al, an, al / an)
                else
                    line = line sprintf("; added p50 lunagate %.0f us, nginx %.0f us (ratio n/a)", al, an)
            }
            print line
        }
    }' "$TMP/best.tsv" >"$TMP/table.md"
}

# ---- main --------------------------------------------------------------------------------
CPU_MODEL=$(awk -F ': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
LG_VERSION=$([ -x "$LG_BIN" ] && "$LG_BIN" -V 2>/dev/null | head -n 1 | sed 's/^lunagate //')
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 {print $2}')
echo "lunagate bench: ${DURATION}s runs after ${WARMUP}s warmup, $ROUNDS round(s), workers: $WORKERS_LIST, conns: $CONNS_LIST"
echo "  machine: $(uname -m), ${CPU_MODEL:-unknown CPU}, nproc $NCPU; pinning: $PINNING"
echo "  tmp: $TMP"

for s in $SCENARIOS; do
    echo "== scenario $s"
    "scenario_$s"
done
micro_benches
report

echo
echo "== results (best of $ROUNDS by req/s)"
cat "$TMP/table.md"
[ -s "$NOTES" ] && { echo; cat "$NOTES"; }

if [ "$RESULTS" != /dev/null ]; then
    # shellcheck disable=SC2016  # backquotes are markdown
    [ -f "$RESULTS" ] || printf '# Benchmark results\n\nAppended by `make bench` (spec/bench/run.sh); see spec/bench/README.md.\n' >"$RESULTS"
    {
        echo
        echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — $(uname -m), ${CPU_MODEL:-unknown CPU}, nproc $NCPU"
        echo
        echo "lunagate ${LG_VERSION:-not built} (git ${GIT_REV:-?}), nginx $NGINX_VERSION, wrk $WRK_VERSION;" \
             "${DURATION}s runs after ${WARMUP}s warmup, best of $ROUNDS; pinning: $PINNING."
        echo
        cat "$TMP/table.md"
        if [ -s "$NOTES" ]; then echo; echo '```text'; cat "$NOTES"; echo '```'; fi
    } >>"$RESULTS"
    echo
    echo "appended to ${RESULTS#"$ROOT"/}"
fi
