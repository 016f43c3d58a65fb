# shifter-rs: the two entry points are `make demo` and `make test` (as root on a
# Debian 12 machine; both install what they need). See README.md.
SHELL := /bin/bash
export SHIFTER_TB ?= /tmp/shifter-tb
CARGO ?= cargo

.PHONY: all deps build build-release lint unit e2e test demo bench fuzz cluster-up cluster-down clean help install-build install uninstall deb

all: build

help:
	@echo "make demo          build, start the local cluster, run the demo job as a non-root user"
	@echo "make test          every test tier: lint, unit, root, end-to-end on the local cluster"
	@echo "make bench         benchmarks under integration/bench (not run by CI)"
	@echo "make reliability   hostile, faults and load tiers plus fuzzing on a cluster of its own, then a table of figures"
	@echo "make cluster-up    start the local cluster by hand (state in \$$SHIFTER_TB=$(SHIFTER_TB))"
	@echo "make cluster-down  stop it and check nothing is left"
	@echo "make fuzz          every cargo-fuzz target for FUZZ_SECONDS (default 300) each"
	@echo "make install       build (PROFILE=release) and install under PREFIX=$(PREFIX) (DESTDIR, SLURM_PLUGIN_DIR, SHIFTER_SETUID=no)"
	@echo "make uninstall     remove what make install installed, except the configuration"
	@echo "make deb           build target/deb/shifter-rs_*.deb (PROFILE=debug DEB_COMPRESSION=gzip for a quick one)"

deps:
	@integration/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

build-release: deps
	$(CARGO) build --workspace --release

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: build
	integration/run-tests.sh unit

e2e: build
	integration/run-tests.sh e2e

test: deps
	integration/run-tests.sh all

demo: build
	integration/demo.sh

bench: build-release
	integration/bench/run-all.sh

fuzz:
	integration/fuzz.sh $${FUZZ_SECONDS:-300}

# Brings its own cluster up and down (at $SHIFTER_TB); FUZZ_SECONDS per fuzz target.
.PHONY: reliability
reliability: build
	integration/reliability.sh $${FUZZ_SECONDS:-10}

cluster-up: build
	integration/cluster/up.sh
	@echo "use it with: source $(SHIFTER_TB)/env"

cluster-down:
	integration/cluster/down.sh

clean:
	$(CARGO) clean

# --- installing: see README "Installing" ----------------------------------------
# The variables are passed to packaging/install.sh, which documents them.
PROFILE ?= release
PREFIX ?= /usr/local
INSTALL_VARS = BUILD_DIR=$(CURDIR)/target/$(PROFILE) PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) \
	$(foreach v,BINDIR SBINDIR MANDIR SYSCONFDIR SLURM_SYSCONFDIR SYSTEMD_UNIT_DIR BASH_COMPLETION_DIR \
	ZSH_COMPLETION_DIR STATEDIR CACHEDIR SLURM_PLUGIN_DIR SHIFTER_SETUID STRIP,$(if $($(v)),$(v)=$($(v))))

# The debug profile builds exactly what `make build` does, so packaging the
# tested build adds no compilation.
install-build: deps
ifeq ($(PROFILE),release)
	$(CARGO) build --workspace --release
else
	$(CARGO) build --workspace --all-targets
endif

install: install-build
	$(INSTALL_VARS) packaging/install.sh

uninstall:
	$(INSTALL_VARS) packaging/install.sh uninstall

deb: install-build
	BUILD_DIR=$(CURDIR)/target/$(PROFILE) packaging/build-deb.sh
