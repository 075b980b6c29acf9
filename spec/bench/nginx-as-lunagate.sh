#!/bin/sh
# nginx-as-lunagate.sh -- stands in for build/lunagate in the bench: reads the bench's
# lunagate config (port, upstream, readinessAddr, workerThreads) and runs nginx as the proxy
# plus a readiness endpoint.  Use it to check run.sh itself and to see the noise floor of
# the machine: `BENCH_LUNAGATE_BIN=spec/bench/nginx-as-lunagate.sh make bench` compares
# nginx with nginx, so the ratios should come out near 1.00.
# SPDX-License-Identifier: MIT
[ "${1:-}" = -V ] && { echo "nginx-as-lunagate"; exit 0; }
if [ "${1:-}" != -f ] || [ ! -f "${2:-}" ]; then echo "usage: $0 -f CONFIG" >&2; exit 2; fi
f=$2
port=$(awk '/^- port:/ {print $3; exit}' "$f")
up=$(awk '/- host:/ {print $3; exit}' "$f")
ready=$(awk '/readinessAddr:/ {print $2; exit}' "$f")
w=$(awk '/workerThreads:/ {print $2; exit}' "$f")
d=$(dirname "$f")/nginx-as-lunagate
mkdir -p "$d"
cat >"$d/nginx.conf" <<C
worker_processes ${w:-1};
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $d/client_body; proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
    keepalive_timeout 75s; keepalive_requests 1000000;
    upstream u { server $up; keepalive 128; }
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server { listen $ready; location = /healthz/ready { return 200 "ready\n"; } }
}
C
exec /usr/sbin/nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;'
