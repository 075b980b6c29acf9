#!/bin/sh
# lint.sh -- clang-format check on C, luacheck on Lua.
cd "$(dirname "$0")/../.." || exit 1
rc=0
clang-format --dry-run --Werror src/*.c src/*.h spec/02-c/*.c spec/02-c/*.h || rc=1
luacheck -q lua plugins spec config/examples || rc=1
exit $rc
