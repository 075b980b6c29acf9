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
SCENARIOS=${BENCH_SCENARIOS:-"plain llm logging plugins tracing tracing-down"}  # run in order
SEC_DURATION=${BENCH_SEC_DURATION:-2}  # seconds per measured run in the secondary scenarios
SEC_WORKERS=${BENCH_SEC_WORKERS:-1}    # workers in the secondary scenarios (llm ... tracing)
SEC_CONNS=${BENCH_SEC_CONNS:-50}       # wrk connections in the secondary scenarios
SEC_ROUNDS=${BENCH_SEC_ROUNDS:-5}      # interleaved rounds in the secondary scenarios
DOWN_DURATION=${BENCH_DOWN_DURATION:-30}   # seconds of the single tracing-down run
PORT_BASE=${BENCH_PORT_BASE:-18700}    # first port tried; free ports are searched upward
LG_BIN=${BENCH_LUNAGATE_BIN:-$ROOT/build/lunagate}
LG_EXTRA=${BENCH_LUNAGATE_EXTRA:-}     # file: YAML merged into lunagate's `config:` block
LG_CONFIG=${BENCH_LUNAGATE_CONFIG:-}   # file: a whole lunagate config template (see README)
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
PIN=${BENCH_PIN:-1}                    # 0: no taskset at all
RESULTS=${BENCH_RESULTS:-$ROOT/spec/bench/RESULTS.md}   # /dev/null: do not record
NGINX=${BENCH_NGINX:-/usr/sbin/nginx}
BODY="lunagate-bench upstream ok"      # the upstream's fixed response body
BENCH_DIR=$ROOT/spec/bench
# The upstream's answer to POST /v1/chat/completions (llm scenario): a realistic non-streaming
# OpenAI chat.completion with usage.  No single quotes, dollars or backslashes in that file:
# it goes into nginx.conf as a quoted string.
CHAT_JSON=$(tr -d '\n' <"$BENCH_DIR/chat-completion.json")

for t in "$NGINX" wrk curl; do
    command -v "$t" >/dev/null 2>&1 || { echo "bench: $t not found (make deps installs it)"; exit 1; }
done

# (A neutral name: other people's cleanups of "lunagate" processes must not hit our nginx.)
TMP=$(mktemp -d /tmp/lgbench.XXXXXX) || exit 1
chmod 755 "$TMP"                       # nginx workers run as nobody when we are root
ROWS=$TMP/rows.tsv                     # scenario workers conns target rps p50_us p99_us errors
RATIOS=$TMP/ratios.tsv                 # scenario num_target den_target kind limit (see ratio())
: >"$RATIOS"
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
        location = /v1/chat/completions {
            default_type application/json;
            if (\$http_authorization !~ "^Bearer bench-") { return 401; }
            return 200 '$CHAT_JSON';
        }
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
# lg_config WORKERS EXTRA_FILE [TEMPLATE]: prints a lunagate config proxying every path to the
# upstream.  With TEMPLATE (a scenario's own) or BENCH_LUNAGATE_CONFIG that template file is
# used instead, with @PORT@, @UPSTREAM@,
# @WORKERS@, @READY@ and @STATS@ substituted.  EXTRA_FILE (or BENCH_LUNAGATE_EXTRA) is YAML
# whose top-level keys are merged into the `config:` block (e.g. `logging: {...}`,
# `tracing: {...}`).
lg_config() {
    tpl=${3:-$LG_CONFIG}
    if [ -n "$tpl" ]; then
        sed -e "s/@PORT@/$LG_PORT/g" -e "s/@UPSTREAM@/127.0.0.1:$UP_PORT/g" \
            -e "s/@WORKERS@/$1/g" -e "s/@READY@/127.0.0.1:$LG_READY/g" \
            -e "s/@STATS@/127.0.0.1:$LG_STATS/g" "$tpl"
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

# lg_start WORKERS [EXTRA_FILE] [TEMPLATE] [NAME]: 0 when lunagate is up and proxies the
# upstream's body for GET /; otherwise 1 with the reason in LG_SKIP (so the lunagate rows are
# left out, not faked).  NAME (default "lunagate") names its config and log files in $TMP, so
# a scenario can run several instances side by side: copy $LG_PID/$LG_PORT/$LG_STATS away
# before the next lg_start.  stdout (the access log) goes to $LG_STDOUT when set (e.g.
# /dev/null), else with stderr to $TMP/NAME.log.
LG_PID=""; LG_PORT=""; LG_READY=""; LG_STATS=""; LG_SKIP=""; LG_STDOUT=""
lg_start() {
    LG_PID=""
    if [ ! -x "$LG_BIN" ]; then LG_SKIP="$LG_BIN not built"; return 1; fi
    alloc_port LG_PORT; alloc_port LG_READY; alloc_port LG_STATS
    extra=${2:-$LG_EXTRA}
    name=${4:-lunagate}
    log=$TMP/$name.log
    lg_config "$1" "$extra" "${3:-}" >"$TMP/$name.yaml"
    if [ -n "$LG_STDOUT" ]; then
        $(pin_proxy "$1") "$LG_BIN" -f "$TMP/$name.yaml" >"$LG_STDOUT" 2>"$log" &
    else
        $(pin_proxy "$1") "$LG_BIN" -f "$TMP/$name.yaml" >"$log" 2>&1 &
    fi
    LG_PID=$!
    track "$LG_PID" "$name"
    if ! wait_http "http://127.0.0.1:$LG_READY/healthz/ready" "$READY_TIMEOUT" "$LG_PID"; then
        why="not ready within ${READY_TIMEOUT}s"
        alive "$LG_PID" || why="exited"
        LG_SKIP="$why (log: $(tail -n 1 "$log" | cut -c1-120))"
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
# appends a row to $ROWS.  M_DUR (seconds, default $DURATION), M_WARM (warmup seconds, default
# $WARMUP; 0: none) and M_SCRIPT (a wrk Lua script, e.g. spec/bench/post.lua) change the run
# when set.
M_DUR=""; M_WARM=""; M_SCRIPT=""
measure() {
    url="http://127.0.0.1:$5${6:-/}"
    threads=1
    script=""
    [ -n "$M_SCRIPT" ] && script="-s $M_SCRIPT"
    # shellcheck disable=SC2086  # $script is "" or two words
    [ "${M_WARM:-$WARMUP}" != 0 ] &&
        $(pin_wrk) wrk -t"$threads" -c"$3" -d"${M_WARM:-$WARMUP}s" $script "$url" >/dev/null 2>&1
    out=$TMP/wrk-$1-$2-$3-$4.txt
    # shellcheck disable=SC2086
    $(pin_wrk) wrk -t"$threads" -c"$3" -d"${M_DUR:-$DURATION}s" --latency $script "$url" \
        >"$out" 2>&1
    # shellcheck disable=SC2046  # four numbers, split on purpose
    set -- "$1" "$2" "$3" "$4" $(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"
    dead=""
    while read -r p name; do
        alive "$p" && continue
        # a child of this shell: wait gives its exit status (128 + signal when killed)
        wait "$p" 2>/dev/null; st=$?
        why="exit status $st"
        [ "$st" -gt 128 ] && why="killed by signal $((st - 128))"
        tab=$(printf '\t')
        [ -f "$TMP/$name.log" ] && why="$why; last log line other than a request line:" &&
            why="$why $(grep -v "${tab}request " "$TMP/$name.log" | tail -n 1 | cut -c1-160)"
        note "bench: $name (pid $p) died during $1 $2w $3c $4 (crash, or killed from" \
             "outside): $why"
        dead="$dead $p"
    done <"$PROCS"
    for p in $dead; do sed -i "/^$p /d" "$PROCS"; done    # reported once
    if [ "$5" = 0 ] || [ "$8" != 0 ]; then
        note "$1 $2w $3c $4: $(grep -E 'errors|Non-2xx|^[a-z].*:' "$out" | grep -v '^Running' | tr -s ' \n' ' ' | cut -c1-200)"
    fi
    printf '  %-12s workers %-2s conns %-3s %-16s %9s req/s  p50 %7s us  p99 %7s us  errors %s\n' \
        "$@"
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

# ratio SCENARIO NUM DEN KIND LIMIT: asks the report for a line comparing the req/s of targets
# NUM and DEN in each (workers, conns) of SCENARIO.  KIND "min": NUM/DEN, target >= LIMIT;
# KIND "cost": 1 - NUM/DEN in percent, target <= LIMIT %.
ratio() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RATIOS"; }

# rounds SCENARIO W C PATH TARGET=PORT...: $SEC_ROUNDS interleaved rounds over the targets
# (odd rounds in the given order, even rounds reversed), one `measure` of $SEC_DURATION s
# each; only the first round warms up (the targets stay up between rounds).
rounds() {
    rs=$1; rw=$2; rc=$3; rpath=$4; shift 4
    rrev=""
    for rt in "$@"; do rrev="$rt $rrev"; done
    M_DUR=$SEC_DURATION
    ri=1
    while [ "$ri" -le "$SEC_ROUNDS" ]; do
        rlist="$*"
        [ $((ri % 2)) = 0 ] && rlist=$rrev
        [ "$ri" -gt 1 ] && M_WARM=0
        for rt in $rlist; do measure "$rs" "$rw" "$rc" "${rt%%=*}" "${rt#*=}" "$rpath"; done
        ri=$((ri + 1))
    done
    M_DUR=""; M_WARM=""
}

# lg_yaml_head: the `config:` block of a scenario template (placeholders left for lg_config).
lg_yaml_head() {
    cat <<EOF
config:
  statsAddr: @STATS@
  readinessAddr: @READY@
  adminAddr: "off"
  workerThreads: @WORKERS@
EOF
}

# metric_sum STATS_ADDR NAME: the sum of a Prometheus series' samples (0 when absent).
metric_sum() {
    curl -s --max-time 2 "http://$1/metrics" 2>/dev/null |
        awk -v n="$2" 'index($1, n) == 1 && $1 !~ /^#/ { s += $NF } END { printf "%d", s }'
}

# llm: non-streaming OpenAI chat completions (POST /v1/chat/completions, spec/bench/post.lua)
# through nginx (plain proxy), lunagate (plain proxy) and lunagate's full LLM path (ai backend,
# openAI provider, backendAuth); the upstream answers a fixed chat.completion with usage.
scenario_llm() {
    w=$SEC_WORKERS; c=$SEC_CONNS
    upstream_start "$w"
    nginx_proxy_start "$w"
    { lg_yaml_head; cat <<EOF
binds:
- port: @PORT@
  listeners:
  - routes:
    - name: llm
      matches:
      - path: {pathPrefix: /v1/chat/completions}
      backends:
      - ai:
          name: openai
          provider: {openAI: {}}
          hostOverride: "@UPSTREAM@"
      policies:
        backendAuth: {key: bench-key}
    - name: rest
      backends:
      - host: @UPSTREAM@
EOF
    } >"$TMP/llm-template.yaml"
    targets="nginx=$NGX_PORT"
    if lg_start "$w" "" "" lunagate-plain; then
        plain_pid=$LG_PID; targets="$targets lunagate=$LG_PORT"
    else
        plain_pid=""; note "llm: lunagate plain proxy skipped: $LG_SKIP"
    fi
    llm_pid=""
    if lg_start "$w" "" "$TMP/llm-template.yaml" lunagate-llm; then
        llm_pid=$LG_PID; llm_port=$LG_PORT; llm_stats=$LG_STATS
        # The upstream answers 401 unless a "Bearer bench-..." key arrives: this request has
        # none, so a 200 means backendAuth put bench-key in.
        got=$(curl -s --max-time 2 -H 'Content-Type: application/json' \
            -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
            -w ' %{http_code}' "http://127.0.0.1:$llm_port/v1/chat/completions" 2>/dev/null)
        case $got in
        *'"chat.completion"'*' 200') targets="$targets lunagate-llm=$llm_port" ;;
        *) note "llm: lunagate LLM route skipped: POST answered: $(echo "$got" | head -c 160)"
           stop_pid "$llm_pid"; llm_pid="" ;;
        esac
    else
        note "llm: lunagate LLM route skipped: $LG_SKIP"
    fi
    M_SCRIPT=$BENCH_DIR/post.lua
    # shellcheck disable=SC2086  # target=port words
    rounds llm "$w" "$c" /v1/chat/completions $targets
    M_SCRIPT=""
    ratio llm lunagate-llm nginx min 0.70
    if [ -n "$llm_pid" ]; then
        # usage check: the upstream's answer has prompt_tokens 24
        tokens=$(metric_sum "127.0.0.1:$llm_stats" \
            'agentgateway_gen_ai_client_token_usage_sum{gen_ai_token_type="input"')
        note "llm: input tokens counted by the LLM route's metrics: $tokens (24 per request)"
        byc=$(metric_sum "127.0.0.1:$llm_stats" 'agentgateway_llm_requests_total{parser="c"')
        byl=$(metric_sum "127.0.0.1:$llm_stats" 'agentgateway_llm_requests_total{parser="lua"')
        note "llm: requests parsed by the C chat completions path: $byc, by Lua: $byl"
        stop_pid "$llm_pid"
    fi
    [ -n "$plain_pid" ] && stop_pid "$plain_pid"
    stop_pid "$NGX_PID"; stop_pid "$UP_PID"
}

# logging: lunagate plain proxy with the access log on (config.logging.level info, one line
# per request on stdout, which goes to /dev/null) against off (level warn).  Both run at once
# and are measured interleaved.
scenario_logging() {
    w=$SEC_WORKERS; c=$SEC_CONNS
    printf 'logging:\n  level: info\n' >"$TMP/extra-log-on.yaml"
    printf 'logging:\n  level: warn\n' >"$TMP/extra-log-off.yaml"
    upstream_start "$w"
    # First check that "on" writes a request line and "off" does not, with stdout to a file.
    for lv in on off; do
        LG_STDOUT=$TMP/logcheck-$lv.out
        if lg_start "$w" "$TMP/extra-log-$lv.yaml" "" "lunagate-logcheck-$lv"; then
            curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$LG_PORT/logcheck"
            sleep 0.3
            stop_pid "$LG_PID"
        fi
    done
    LG_STDOUT=""
    n_on=$(grep -c logcheck "$TMP/logcheck-on.out" 2>/dev/null)
    n_off=$(grep -c logcheck "$TMP/logcheck-off.out" 2>/dev/null)
    note "logging: check with stdout to a file: ${n_on:-0} request line(s) with level info," \
         "${n_off:-0} with level warn"
    targets=""
    LG_STDOUT=/dev/null
    if lg_start "$w" "$TMP/extra-log-off.yaml" "" lunagate-log-off; then
        off_pid=$LG_PID; targets="lunagate=$LG_PORT"
    else
        off_pid=""; note "logging: lunagate (log off) skipped: $LG_SKIP"
    fi
    if lg_start "$w" "$TMP/extra-log-on.yaml" "" lunagate-log-on; then
        on_pid=$LG_PID; targets="$targets lunagate+log=$LG_PORT"
    else
        on_pid=""; note "logging: lunagate (log on) skipped: $LG_SKIP"
    fi
    LG_STDOUT=""
    # shellcheck disable=SC2086  # target=port words
    [ -n "$targets" ] && rounds logging "$w" "$c" / $targets
    ratio logging lunagate+log lunagate cost 5
    [ -n "$on_pid" ] && stop_pid "$on_pid"
    [ -n "$off_pid" ] && stop_pid "$off_pid"
    stop_pid "$UP_PID"
}

# plugins_template PLUGINS_YAML: a plain proxy route with config.plugins.paths set to
# spec/bench/plugins and the given route policies.plugins list ("" for none).
plugins_template() {
    lg_yaml_head
    cat <<EOF
  plugins:
    paths: [$BENCH_DIR/plugins]
binds:
- port: @PORT@
  listeners:
  - routes:
    - name: bench
EOF
    [ -n "$1" ] && printf '      policies:\n        plugins: %s\n' "$1"
    cat <<EOF
      backends:
      - host: @UPSTREAM@
EOF
}

# plugins: the same plain proxy route with three no-op plugins that implement every phase
# (spec/bench/plugins/bench-noop-{a,b,c}.lua) against none.
scenario_plugins() {
    w=$SEC_WORKERS; c=$SEC_CONNS
    plugins_template "" >"$TMP/plugins-none.yaml"
    plugins_template "[{name: bench-noop-a}, {name: bench-noop-b}, {name: bench-noop-c}]" \
        >"$TMP/plugins-three.yaml"
    upstream_start "$w"
    targets=""
    if lg_start "$w" "" "$TMP/plugins-none.yaml" lunagate-plugins-none; then
        none_pid=$LG_PID; targets="lunagate=$LG_PORT"
    else
        none_pid=""; note "plugins: lunagate (no plugins) skipped: $LG_SKIP"
    fi
    if lg_start "$w" "" "$TMP/plugins-three.yaml" lunagate-plugins-three; then
        three_pid=$LG_PID; targets="$targets lunagate+3plugins=$LG_PORT"
    else
        three_pid=""; note "plugins: lunagate (3 plugins) skipped: $LG_SKIP"
    fi
    # shellcheck disable=SC2086  # target=port words
    [ -n "$targets" ] && rounds plugins "$w" "$c" / $targets
    ratio plugins lunagate+3plugins lunagate cost 10
    [ -n "$three_pid" ] && stop_pid "$three_pid"
    [ -n "$none_pid" ] && stop_pid "$none_pid"
    stop_pid "$UP_PID"
}

# trace_extra PORT: `config:` YAML exporting every request's span over OTLP/HTTP to PORT.
trace_extra() {
    printf 'tracing:\n  otlpEndpoint: http://127.0.0.1:%s\n' "$1"
    printf '  otlpProtocol: http\n  randomSampling: true\n'
}

# sink_start: a one-worker nginx answering 200 (empty body = an empty protobuf
# ExportTraceServiceResponse) to POST /v1/traces, after reading and discarding the request
# body (ngx_http_send_response discards it; keep-alive stays up).  Its access log records
# each export with its size.
SINK_PID=""; SINK_PORT=""
sink_start() {
    alloc_port SINK_PORT
    conf=$TMP/sink.conf
    { nginx_common sink 1; cat <<EOF
    log_format otlp '\$request_method \$uri \$status \$content_length \$request_length';
    client_max_body_size 64m;
    server {
        listen 127.0.0.1:$SINK_PORT backlog=4096;
        access_log $TMP/sink/access.log otlp;
        location = /v1/traces { default_type application/x-protobuf; return 200; }
        location / { return 404; }
    }
}
EOF
    } >"$conf"
    nginx_start sink "$conf" ""; SINK_PID=$NGINX_PID
    if ! wait_http "http://127.0.0.1:$SINK_PORT/v1/traces" 5 "$SINK_PID"; then
        note "tracing: OTLP sink did not start: $(tail -n 1 "$TMP/sink/error.log")"
        return 1
    fi
    : >"$TMP/sink/access.log"    # forget the readiness probe
}

# tracing: lunagate plain proxy exporting a span per request (randomSampling: true) over
# OTLP/HTTP to the sink above, against tracing off.
scenario_tracing() {
    w=$SEC_WORKERS; c=$SEC_CONNS
    upstream_start "$w"
    sink_start || { stop_pid "$SINK_PID"; stop_pid "$UP_PID"; return; }
    trace_extra "$SINK_PORT" >"$TMP/extra-trace.yaml"
    targets=""
    if lg_start "$w" /dev/null "" lunagate-trace-off; then
        off_pid=$LG_PID; targets="lunagate=$LG_PORT"
    else
        off_pid=""; note "tracing: lunagate (tracing off) skipped: $LG_SKIP"
    fi
    if lg_start "$w" "$TMP/extra-trace.yaml" "" lunagate-trace-on; then
        on_pid=$LG_PID; targets="$targets lunagate+trace=$LG_PORT"
    else
        on_pid=""; note "tracing: lunagate (tracing on) skipped: $LG_SKIP"
    fi
    # shellcheck disable=SC2086  # target=port words
    [ -n "$targets" ] && rounds tracing "$w" "$c" / $targets
    ratio tracing lunagate+trace lunagate cost 10
    if [ -n "$on_pid" ]; then
        sleep 1   # let the last batch go out
        got=$(awk '$1 == "POST" && $2 == "/v1/traces" { n++; b += $4; if ($3 != 200) e++ }
            END { printf "%d export POSTs (%.1f MB of bodies, %d not 200)", n, b / 1048576, e }' \
            "$TMP/sink/access.log")
        note "tracing: the OTLP sink got $got"
        stop_pid "$on_pid"
    fi
    [ -n "$off_pid" ] && stop_pid "$off_pid"
    stop_pid "$SINK_PID"; stop_pid "$UP_PID"
}

# tracing-down: tracing on with the OTLP endpoint's port closed (nothing listens there), one
# run of $DOWN_DURATION s: req/s, and lunagate's RSS growth over the run (target < 20 MB).
scenario_tracing_down() {
    w=$SEC_WORKERS; c=$SEC_CONNS
    upstream_start "$w"
    alloc_port DEAD_PORT    # found free and left closed
    trace_extra "$DEAD_PORT" >"$TMP/extra-trace-down.yaml"
    if ! lg_start "$w" "$TMP/extra-trace-down.yaml" "" lunagate-trace-down; then
        note "tracing-down: lunagate skipped: $LG_SKIP"; stop_pid "$UP_PID"; return
    fi
    $(pin_wrk) wrk -t1 -c"$c" -d1s "http://127.0.0.1:$LG_PORT/" >/dev/null 2>&1
    rss0=$(rss_kb "$LG_PID")
    M_DUR=$DOWN_DURATION
    measure tracing-down "$w" "$c" lunagate+trace-down "$LG_PORT"
    M_DUR=""
    rss1=$(rss_kb "$LG_PID")
    verdict=MISSED
    [ $((rss1 - rss0)) -lt 20480 ] && verdict=ok
    note "tracing-down: RSS $(mb "$rss0") MB before the ${DOWN_DURATION}s run, $(mb "$rss1") MB" \
         "after: growth $(mb $((rss1 - rss0))) MB (target < 20 MB) $verdict"
    stop_pid "$LG_PID"; stop_pid "$UP_PID"
}

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

# paired SCENARIO NUM DEN: the median, min and max of NUM/DEN over the rounds, pairing the
# i-th run of each (rounds() runs every target once per round, back to back). On a noisy
# machine the ratio of two best runs can pick a lucky one; the per-round ratios show the spread.
paired() {
    awk -F '\t' -v s="$1" -v a="$2" -v b="$3" '
    $1 == s && $4 == a { na++; ra[na] = $5 + 0 }
    $1 == s && $4 == b { nb++; rb[nb] = $5 + 0 }
    END {
        n = na < nb ? na : nb; m = 0
        for (i = 1; i <= n; i++) if (rb[i] > 0) x[++m] = ra[i] / rb[i]
        if (m < 2) exit
        for (i = 2; i <= m; i++) { v = x[i]; for (j = i - 1; j >= 1 && x[j] > v; j--) x[j + 1] = x[j]; x[j + 1] = v }
        med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
        printf "  (%s, per round: median %.3f of %d, cost %.1f%%; range %.3f..%.3f)\n", s, med, m,
               (1 - med) * 100, x[1], x[m]
    }' "$ROWS"
}

report() {
    best_rows >"$TMP/best.tsv"
    awk -F '\t' '
    function ms(u) { return sprintf("%.3f", u / 1000) }
    BEGIN {
        print "| scenario | workers | conns | target | req/s | p50 ms | p99 ms | errors |"
        print "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    }
    FILENAME == ARGV[1] { spec[++ns] = $0; next }    # ratio() requests
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
            head = sprintf("- %s, workers %s, conns %s: ", f[1], f[2], f[3])
            for (j = 1; j <= ns; j++) {
                split(spec[j], q, "\t")
                if (q[1] != f[1] || !((k, q[2]) in rps) || !((k, q[3]) in rps) || rps[k, q[3]] == 0)
                    continue
                x = rps[k, q[2]] / rps[k, q[3]]
                if (q[4] == "min")
                    printf "%s%s/%s req/s = %.2f (target >= %.2f) %s\n", head, q[2], q[3], x,
                           q[5], (x >= q[5]) ? "ok" : "MISSED"
                else
                    printf "%s%s/%s req/s = %.3f: cost %.1f%% (target <= %s%%) %s\n", head,
                           q[2], q[3], x, (1 - x) * 100, q[5],
                           ((1 - x) * 100 <= q[5] + 0) ? "ok" : "MISSED"
            }
            if (!((k, "lunagate") in rps) || !((k, "nginx") in rps) || rps[k, "nginx"] == 0) continue
            line = sprintf("%slunagate/nginx req/s = %.2f (target >= 0.90)",
                           head, rps[k, "lunagate"] / rps[k, "nginx"])
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
    }' "$RATIOS" "$TMP/best.tsv" >"$TMP/table.md"
    while IFS="$(printf '\t')" read -r rs rn rd rk _; do
        [ "$rk" = cost ] && paired "$rs" "$rn" "$rd" >>"$TMP/table.md"
    done <"$RATIOS"
}

# ---- main --------------------------------------------------------------------------------
CPU_MODEL=$(awk -F ': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
LG_VERSION=$([ -x "$LG_BIN" ] && "$LG_BIN" -V 2>/dev/null | head -n 1 | sed 's/^lunagate //')
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 {print $2}')
SETUP="plain: ${DURATION}s runs after ${WARMUP}s warmup, best of $ROUNDS,"
SETUP="$SETUP workers $WORKERS_LIST, conns $CONNS_LIST; llm, logging, plugins, tracing:"
SETUP="$SETUP ${SEC_DURATION}s runs (${WARMUP}s warmup first), best of $SEC_ROUNDS,"
SETUP="$SETUP workers $SEC_WORKERS, conns $SEC_CONNS; tracing-down: one ${DOWN_DURATION}s run"
echo "lunagate bench, scenarios: $SCENARIOS"
echo "  $SETUP"
echo "  machine: $(uname -m), ${CPU_MODEL:-unknown CPU}, nproc $NCPU; pinning: $PINNING"
echo "  tmp: $TMP"

for s in $SCENARIOS; do
    echo "== scenario $s"
    "scenario_$(echo "$s" | tr - _)"
done
micro_benches
report

echo
echo "== results (best of $ROUNDS by req/s; llm ... tracing: of $SEC_ROUNDS; tracing-down: one run)"
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
             "pinning: $PINNING."
        echo "Scenarios $SCENARIOS. $SETUP."
        echo
        cat "$TMP/table.md"
        if [ -s "$NOTES" ]; then echo; echo '```text'; cat "$NOTES"; echo '```'; fi
    } >>"$RESULTS"
    echo
    echo "appended to ${RESULTS#"$ROOT"/}"
fi
