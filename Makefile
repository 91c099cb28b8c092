# handoff — one non-recursive Makefile.
#
# Every directory below is a module that builds one static library from all of its .c files
# (the directory is the architecture: see ARCHITECTURE.md). tools/handoff-*.c are thin main()s,
# tests/unit/test_*.c are TAP programs, tests/t*.sh are shell tests. New files are picked up
# without editing this file.
#
#   make                       build everything (warnings are errors)
#   make check                 build and run every test        (SAN=address,undefined for sanitizers)
#   make bench                 benchmarks against named peers; prints tables
#   make demo                  the main job: a real handoff on built-in defaults
#   make install PREFIX=/usr/local
#   make deps                  install build and test dependencies (Debian 12, root)
#   make fuzz                  run the libFuzzer targets for real (clang)

MODULES   := common overlay tracker fs pipeline vm handoff inspect
PREFIX    ?= /usr/local
SAN       ?=
O         ?= $(if $(SAN),build-san,build)
MAKEFLAGS += -j$(shell nproc)
CC        ?= cc
V         ?= 0

PKGS      := fuse3 sqlite3 liblz4 liblzma libzstd libcrypto libxxhash ext2fs com_err libpng
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla -Wformat-security \
             -Wno-missing-field-initializers
CFLAGS    ?= -O2 -g
ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -DFUSE_USE_VERSION=314 \
             -I. $(WARN) $(PKG_CFLAGS) $(CFLAGS) -pthread -MMD -MP
LDFLAGS   ?=
ALL_LDFLAGS := $(LDFLAGS) -pthread
ifneq ($(SAN),)
ALL_CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
ALL_LDFLAGS += -fsanitize=$(SAN)
endif

ifeq ($(V),0)
Q =
qecho = @printf '  %-6s %s\n' $(1) $(2);
else
Q =
qecho =
endif

# ---- libraries -------------------------------------------------------------------------------
mod_srcs = $(wildcard $(1)/*.c)
LIBS := $(foreach m,$(MODULES),$(if $(call mod_srcs,$(m)),$(O)/lib$(m).a))
define lib_rule
$(O)/lib$(1).a: $(patsubst %.c,$(O)/%.o,$(call mod_srcs,$(1)))
	$$(call qecho,AR,$$@)$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(if $(call mod_srcs,$(m)),$(eval $(call lib_rule,$(m)))))

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call qecho,CC,$<)$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

LINK = $(CC) $(ALL_LDFLAGS) -o $@ $< -Wl,--start-group $(LIBS) -Wl,--end-group $(PKG_LIBS) -lm

# ---- tools, unit tests, fuzz replay drivers -------------------------------------------------
TOOL_SRCS := $(wildcard tools/handoff-*.c)
TOOLS     := $(patsubst tools/%.c,$(O)/bin/%,$(TOOL_SRCS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNITS     := $(patsubst tests/unit/%.c,$(O)/tests/%,$(UNIT_SRCS))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,$(O)/tests/%-replay,$(FUZZ_SRCS))
HELPER_SRCS := $(wildcard tests/helpers/*.c)
HELPERS   := $(patsubst tests/helpers/%.c,$(O)/tests/%,$(HELPER_SRCS))

$(O)/bin/%: $(O)/tools/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(call qecho,LINK,$@)$(Q)$(LINK)
$(O)/tests/%: $(O)/tests/unit/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(call qecho,LINK,$@)$(Q)$(LINK)
$(O)/tests/%: $(O)/tests/helpers/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(call qecho,LINK,$@)$(Q)$(LINK)
$(O)/tests/%-replay: $(O)/tests/fuzz/%.o $(O)/tests/fuzz/replay.o $(LIBS)
	@mkdir -p $(dir $@)
	$(call qecho,LINK,$@)$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(O)/tests/fuzz/replay.o -Wl,--start-group $(LIBS) -Wl,--end-group $(PKG_LIBS) -lm
# the replay driver is not a fuzz target of its own
FUZZ_REPLAY := $(filter-out $(O)/tests/replay-replay,$(FUZZ_REPLAY))

all: $(LIBS) $(TOOLS) $(UNITS) $(HELPERS) $(FUZZ_REPLAY)

# ---- tests -----------------------------------------------------------------------------------
check: all
	@HANDOFF_BUILD=$(abspath $(O)) HANDOFF_SRC=$(CURDIR) tests/run $(T)

test-long: all
	@HANDOFF_BUILD=$(abspath $(O)) HANDOFF_SRC=$(CURDIR) HANDOFF_LONG=1 tests/run $(T)

bench: all
	@HANDOFF_BUILD=$(abspath $(O)) HANDOFF_SRC=$(CURDIR) bench/run $(B)

demo: all
	@HANDOFF_BUILD=$(abspath $(O)) HANDOFF_SRC=$(CURDIR) scripts/demo.sh

deps:
	scripts/install-deps.sh

FUZZ_CC ?= clang
fuzz:
	@HANDOFF_SRC=$(CURDIR) FUZZ_CC=$(FUZZ_CC) scripts/fuzz.sh $(FUZZ_SECONDS)

# ---- install ---------------------------------------------------------------------------------
MANPAGES := $(wildcard man/*.[0-9])
install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	@for p in $(MANPAGES); do s=$${p##*.}; install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
	  echo "install -m 644 $$p $(DESTDIR)$(PREFIX)/share/man/man$$s/"; \
	  install -m 644 $$p $(DESTDIR)$(PREFIX)/share/man/man$$s/; done

clean:
	rm -rf build build-san

.PHONY: all check test-long bench demo deps fuzz install clean
.SECONDARY:
.DEFAULT_GOAL := all

-include $(shell find $(O) -name '*.d' 2>/dev/null)
