#!/bin/sh
# deps.sh -- install whatever Debian packages and npm modules are missing.
# Idempotent and quick when everything is present: dpkg is asked first and
# apt only runs for what is absent.
set -e
PKGS="build-essential pkg-config liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev libyaml-dev
libprotobuf-c-dev protobuf-c-compiler libevent-dev libcurl4-openssl-dev libssl-dev
libhttp-parser-dev libpcre2-dev lua-busted lua-check lua-yaml nodejs npm nginx wrk prometheus
docker-compose kubectl yamllint clang-format curl ca-certificates procps"
missing=""
for p in $PKGS; do
    # Node.js, npm and kubectl may come from outside Debian (the machine image ships Node
    # 20 with its own npm): a working command counts as installed.
    case $p in
    nodejs) command -v node >/dev/null && continue ;;
    npm | kubectl) command -v "$p" >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q >/dev/null || true
    # Packages that do not exist on this release are skipped, not fatal.
    avail=""
    for p in $missing; do
        apt-cache show "$p" >/dev/null 2>&1 && avail="$avail $p" || echo "deps: $p not available, skipped"
    done
    [ -n "$avail" ] && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
        -o DPkg::Lock::Timeout=300 --no-install-recommends $avail >/dev/null
fi
# nginx from Debian starts itself on install; the benchmark runs its own.
if [ -f spec/package-lock.json ]; then
    if [ ! -d spec/node_modules ] || [ spec/package-lock.json -nt spec/node_modules/.package-lock.json ]; then
        echo "deps: npm ci (spec/)"
        (cd spec && npm ci --no-fund --no-audit --loglevel=error >/dev/null)
    fi
fi
