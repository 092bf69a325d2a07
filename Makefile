# vmckpt - see README.md.  `make check` installs its own dependencies.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR    = $(PREFIX)/bin
LIBDIR    = $(PREFIX)/lib
INCDIR    = $(PREFIX)/include
MANDIR    = $(PREFIX)/share/man
PCDIR     = $(LIBDIR)/pkgconfig
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDDIR  ?= $(PREFIX)/lib/systemd/system

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -Ilib -Iformat
ALLCFLAGS = -std=gnu11 $(WARN) -fPIC -fvisibility=hidden -pthread $(CFLAGS)
LIBS      = -lsodium -lcrypto -lzstd -ljansson -lnbd -pthread

# The xen backend is built when the Xen toolstack headers are present
# (Debian: libxen-dev, which `make check` installs); say so when it is not.
# XEN=1: built into libvmckpt.  XEN=module (the Debian packages): built as
# $(BACKENDDIR)/xen.so, which libvmckpt loads when it is installed, and
# the tools link libvmckpt.so (a KVM host never needs the Xen libraries).
XEN      ?= $(shell test -f /usr/include/libxl.h && echo 1)
XEN_LIBS  = -lxenlight -lxentoollog -lxenctrl -lxenguest -lxenstore
BACKENDDIR ?= $(LIBDIR)/vmckpt/backends
MODULES   =
ifeq ($(XEN),1)
CPPFLAGS += -DVMC_HAVE_XEN
LIBS     += $(XEN_LIBS)
PC_XEN    = $(XEN_LIBS)
else ifeq ($(XEN),module)
CPPFLAGS += -DVMC_XEN_MODULES -DVMC_BACKEND_DIR=\"$(BACKENDDIR)\"
LIBS     += -ldl
MODULES   = $(B)/backends/xen.so
else
$(info vmckpt: libxl.h not found: building WITHOUT the xen backend (apt-get install libxen-dev))
endif

B         = build
# lib/README.md is the source map.
LIB_SRC   = format/wire.c \
            lib/io/util.c lib/io/outfile.c lib/io/input.c lib/io/endpoint.c \
            lib/io/disksrc.c \
            lib/stream/keys.c lib/stream/header.c lib/stream/chunk.c \
            lib/stream/record.c lib/stream/disk.c lib/stream/image.c lib/stream/live.c \
            lib/backend/backend.c lib/backend/qmp.c lib/backend/qemu_registry.c \
            lib/backend/qemu.c lib/backend/qemu_view.c lib/backend/xl.c lib/backend/xen.c \
            lib/backend/policy.c lib/backend/qemu_policy.c \
            lib/backend/xen_policy.c \
            lib/engine.c lib/migrate.c
LIB_OBJ   = $(LIB_SRC:%.c=$(B)/%.o)
CLI_OBJ   = $(B)/cmd/cli.o
TOOLS     = vmimage vmsave vmrestore vmctl vmmigrate
TOOL_BIN  = $(TOOLS:%=$(B)/%)
SOVER     = 0

all: $(B)/libvmckpt.a $(B)/libvmckpt.so.$(SOVER) $(TOOL_BIN) $(B)/vmckpt.pc \
     $(MODULES)

# Objects track their own headers (-MMD -MP); the one-command sanitizer
# and fuzz builds below depend on every header.
HDRS      = $(wildcard lib/*.h lib/*/*.h format/*.h cmd/*.h tests/unit/*.h)
$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) -MMD -MP -c $< -o $@
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TOOLS:%=$(B)/cmd/%.d)
# The tools' objects are not intermediate: keep them (no rebuild each time).
.SECONDARY: $(CLI_OBJ) $(TOOLS:%=$(B)/cmd/%.o)

$(B)/libvmckpt.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/libvmckpt.so.$(SOVER): $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libvmckpt.so.$(SOVER) -o $@ $^ $(LIBS)

ifeq ($(XEN),module)
$(B)/%: $(B)/cmd/%.o $(CLI_OBJ) $(B)/libvmckpt.so.$(SOVER)
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) -L$(B) \
	    -l:libvmckpt.so.$(SOVER) $(LIBS)

$(B)/backends/xen.so: lib/backend/xen.c $(B)/libvmckpt.so.$(SOVER) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DVMC_HAVE_XEN -DVMC_XEN_MODULE $(ALLCFLAGS) $(LDFLAGS) \
	    -shared -o $@ $< -L$(B) -l:libvmckpt.so.$(SOVER) $(XEN_LIBS) -pthread
else
$(B)/%: $(B)/cmd/%.o $(CLI_OBJ) $(B)/libvmckpt.a
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
endif

VERSION   = $(shell sed -n 's/.*VMC_TOOL_VERSION "\(.*\)"/\1/p' lib/vmckpt.h)
PC_SED    = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	        -e 's|@INCDIR@|$(INCDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	        -e 's|@XEN_LIBS@|$(PC_XEN)|'
$(B)/vmckpt.pc: vmckpt.pc.in Makefile
	$(PC_SED) $< > $@

# ---- tests --------------------------------------------------------------
UNIT      = $(B)/tests/unit
ENGINE_T  = $(B)/tests/engine
FUZZ_REPLAY = $(B)/tests/fuzz_replay

$(UNIT): tests/unit/unit.c $(B)/libvmckpt.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(LIBS)

# An attacker's image, from the public writer only (tests/attack/).
$(B)/tests/forge: tests/attack/forge.c $(B)/libvmckpt.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(LIBS)

$(ENGINE_T): tests/unit/engine.c $(B)/libvmckpt.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(LIBS)

$(FUZZ_REPLAY): tests/fuzz/fuzz_stream.c tests/fuzz/replay.c $(B)/libvmckpt.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(LIBS)

# ASan+UBSan build of the library, the unit tests and the fuzz replayer.
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
$(B)/asan/unit: tests/unit/unit.c $(LIB_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) -pthread $(SAN_FLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) $(LIBS)
$(B)/asan/engine: tests/unit/engine.c $(LIB_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) -pthread $(SAN_FLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) $(LIBS)
$(B)/asan/fuzz_replay: tests/fuzz/fuzz_stream.c tests/fuzz/replay.c $(LIB_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) -pthread $(SAN_FLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) $(LIBS)

# libFuzzer target (clang); `make fuzz FUZZ_TIME=60` runs it.
FUZZ_TIME ?= 60
$(B)/fuzz/fuzz_stream: tests/fuzz/fuzz_stream.c $(LIB_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -std=gnu11 -g -O1 -pthread \
	    -fsanitize=fuzzer,address,undefined $(LDFLAGS) -o $@ \
	    $(filter %.c,$^) $(LIBS)
fuzz: $(B)/fuzz/fuzz_stream
	mkdir -p $(B)/fuzz/new
	$< -max_total_time=$(FUZZ_TIME) $(B)/fuzz/new tests/fuzz/corpus

deps:
	tests/deps.sh

test-bins: all $(UNIT) $(ENGINE_T) $(FUZZ_REPLAY) $(B)/asan/unit \
           $(B)/asan/engine $(B)/asan/fuzz_replay \
           $(B)/tests/gendata $(B)/tests/noconsole.so $(B)/tests/forge

# The test command of README.md: installs what it needs, builds, runs all.
check: deps
	$(MAKE) test-bins
	tests/run.sh

# Real Xen 4.17 under QEMU TCG (also part of `make check`): builds the lab
# (debootstrap, cached) and runs tests/xen/vmckpt.sh, vmckpt-disk.sh and
# vmckpt-pvh.sh in its dom0.
check-xen: deps
	$(MAKE) all
	XEN_SCRIPTS="vmckpt.sh vmckpt-disk.sh:600 vmckpt-pvh.sh:600 smoke.sh" tests/e2e/xen.sh | tee /dev/stderr | \
	    awk '/^PASS/{p++} /^FAIL/{f++} /^SKIP/{s++} END {printf "%d passed, %d failed, %d skipped\n", p, f, s; exit f > 0}'

# Issue 9: N rounds of PVH live saves through vmckpt and through xl in one
# lab boot, with the per-operation death rates (not part of `make check`).
# MODE=restored: one domain saved and restored over and over instead.
N ?= 5
MODE ?=
check-xen-stress: deps
	$(MAKE) all
	MODE=$(MODE) tests/xen/stress.sh $(N)

check-fast: test-bins
	VMC_FAST=1 tests/run.sh

bench: deps
	tests/deps.sh bench
	$(MAKE) all $(B)/tests/gendata
	tests/bench/bench.sh
	tests/bench/bench_qemu.py
	tests/bench/bench_disk.py

# The disk capture part of make bench alone (VMC_BENCH_DISK_DATA=64M: quick).
bench-disk: deps
	tests/deps.sh bench
	$(MAKE) all $(B)/tests/gendata
	tests/bench/bench_disk.py

$(B)/tests/noconsole.so: tests/e2e/noconsole.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(LDFLAGS) -shared -o $@ $< -ldl

$(B)/tests/gendata: tests/bench/gendata.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) -O2 $(LDFLAGS) -o $@ $<

demo: deps
	$(MAKE) all
	tests/demo.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) \
	    $(DESTDIR)$(PCDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(SYSTEMDDIR)
	install -m 0755 $(TOOL_BIN) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(B)/libvmckpt.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(B)/libvmckpt.so.$(SOVER) $(DESTDIR)$(LIBDIR)/
	ln -sf libvmckpt.so.$(SOVER) $(DESTDIR)$(LIBDIR)/libvmckpt.so
	install -m 0644 lib/vmckpt.h lib/vmckpt_qemu.h lib/vmckpt_xl.h format/vmckpt_wire.h $(DESTDIR)$(INCDIR)/
	$(PC_SED) vmckpt.pc.in > $(DESTDIR)$(PCDIR)/vmckpt.pc
	chmod 0644 $(DESTDIR)$(PCDIR)/vmckpt.pc
	install -m 0644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 contrib/bash-completion/vmckpt $(DESTDIR)$(BASHCOMPDIR)/
	for t in $(TOOLS); do ln -sf vmckpt $(DESTDIR)$(BASHCOMPDIR)/$$t; done
	install -m 0644 contrib/systemd/vmckpt-checkpoint@.service \
	    contrib/systemd/vmckpt-checkpoint@.timer $(DESTDIR)$(SYSTEMDDIR)/
ifeq ($(XEN),module)
	install -d $(DESTDIR)$(BACKENDDIR)
	install -m 0644 $(B)/backends/xen.so $(DESTDIR)$(BACKENDDIR)/
endif
	@# the user QEMU runs as under root (vmctl(1)); not in a staging root
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && \
	   ! getent passwd vmckpt-qemu >/dev/null; then \
	    useradd --system --user-group --no-create-home \
	        --home-dir /nonexistent --shell /usr/sbin/nologin vmckpt-qemu; \
	fi
	@# this host's signing key, which it trusts (vmckpt(5)); never replaced
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && \
	   [ ! -e /etc/vmckpt/signing.key ]; then \
	    install -d -m 0755 /etc/vmckpt && \
	    $(BINDIR)/vmimage keygen --sign -o /etc/vmckpt/signing.key \
	        > /etc/vmckpt/signing.pub && \
	    { [ -e /etc/vmckpt/trusted_signers ] || \
	      { echo "# signers whose images this host restores (vmrestore(1))"; \
	        echo "$$(cat /etc/vmckpt/signing.pub) this host"; } \
	        > /etc/vmckpt/trusted_signers; }; \
	fi

# Removes exactly what install put there (same PREFIX and DESTDIR).
uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(BINDIR)/%) \
	    $(DESTDIR)$(LIBDIR)/libvmckpt.a $(DESTDIR)$(LIBDIR)/libvmckpt.so \
	    $(DESTDIR)$(LIBDIR)/libvmckpt.so.$(SOVER) \
	    $(DESTDIR)$(INCDIR)/vmckpt.h $(DESTDIR)$(INCDIR)/vmckpt_wire.h \
	    $(DESTDIR)$(INCDIR)/vmckpt_qemu.h $(DESTDIR)$(INCDIR)/vmckpt_xl.h \
	    $(DESTDIR)$(PCDIR)/vmckpt.pc \
	    $(patsubst man/%,$(DESTDIR)$(MANDIR)/man1/%,$(wildcard man/*.1)) \
	    $(patsubst man/%,$(DESTDIR)$(MANDIR)/man5/%,$(wildcard man/*.5)) \
	    $(DESTDIR)$(BASHCOMPDIR)/vmckpt $(TOOLS:%=$(DESTDIR)$(BASHCOMPDIR)/%) \
	    $(DESTDIR)$(SYSTEMDDIR)/vmckpt-checkpoint@.service \
	    $(DESTDIR)$(SYSTEMDDIR)/vmckpt-checkpoint@.timer \
	    $(DESTDIR)$(BACKENDDIR)/xen.so

clean:
	rm -rf $(B)

.PHONY: all check check-xen check-xen-stress check-fast test-bins bench bench-disk demo deps install uninstall clean fuzz
