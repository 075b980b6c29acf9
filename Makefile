# Makefile -- build, run and test lunagate.  `make run` and `make test` are the
# two commands a new user types; everything else hangs off them.

BUILD    ?= build
CC       ?= cc
SANITIZE ?=
CONFIG   ?= config/lunagate.yaml

PKGS := lua5.4 libevent libevent_openssl libevent_pthreads yaml-0.1 libprotobuf-c \
        libcurl openssl libpcre2-8
LIBDIR := /usr/lib/$(shell gcc -print-multiarch 2>/dev/null)

ifeq ($(SANITIZE),1)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
OPT := -O2 -g
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation \
              -Isrc -I$(BUILD)/gen $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
              -DLG_VERSION='"$(VERSION)"' -DLG_HOME='"$(CURDIR)"' $(CFLAGS)
# Lua and lua-cjson are linked statically; -Wl,-E keeps the Lua C API visible
# to any C module a plugin might load.
LDLIBS_ALL := -Wl,-E $(LIBDIR)/liblua5.4-cjson.a $(LIBDIR)/liblua5.4.a \
              $(filter-out -llua5.4,$(shell pkg-config --libs $(PKGS) 2>/dev/null)) \
              -lhttp_parser -lpthread -ldl -lm $(LDFLAGS)
ifeq ($(SANITIZE),1)
LDLIBS_ALL += -fsanitize=address,undefined
endif

PROTOS   := $(wildcard src/proto/*.proto)
PROTO_C  := $(patsubst src/proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
SRCS     := $(filter-out src/main.c,$(wildcard src/*.c))
OBJS     := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS)) \
            $(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(PROTO_C))
CTESTS   := $(patsubst spec/02-c/%.c,$(BUILD)/tests/%,$(wildcard spec/02-c/test_*.c))

.SECONDARY: $(PROTO_C) $(patsubst %.c,%.h,$(PROTO_C))
.PHONY: all deps run test test-c test-lua test-integration test-asan bench lint fmt clean
all: $(BUILD)/lunagate

deps:
	@sh spec/tools/deps.sh

run: deps all
	$(BUILD)/lunagate -f $(CONFIG)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: src/proto/%.proto
	@mkdir -p $(BUILD)/gen
	@echo "  PROTO   $<"
	@protoc-c --proto_path=src/proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -Wno-error -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: src/%.c | $(PROTO_C)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BUILD)/liblunagate.a: $(OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/lunagate: $(BUILD)/obj/main.o $(BUILD)/liblunagate.a
	@echo "  LINK    $@"
	@$(CC) -o $@ $^ $(LDLIBS_ALL)

# Each C unit test #includes the module it tests and links the rest from the archive.
$(BUILD)/tests/%: spec/02-c/%.c spec/02-c/test.h $(BUILD)/liblunagate.a
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CFLAGS_ALL) -Ispec/02-c -o $@ $< $(BUILD)/liblunagate.a $(LDLIBS_ALL)

ctests: $(CTESTS)

test: deps
	@$(MAKE) --no-print-directory all ctests
	@$(MAKE) --no-print-directory BUILD=build-asan SANITIZE=1 all ctests
	@sh spec/tools/run-tests.sh

test-c test-lua test-integration test-cel test-asan: all ctests
	@sh spec/tools/run-tests.sh $(subst test-,,$@)

bench: deps all
	@sh spec/bench/run.sh

lint:
	@sh spec/tools/lint.sh

fmt:
	clang-format -i src/*.c src/*.h spec/02-c/*.c spec/02-c/*.h

clean:
	rm -rf build build-asan

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/obj/gen/*.d)
