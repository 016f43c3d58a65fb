#!/usr/bin/env bash
# Installs the built shifter-rs into $DESTDIR (what `make install` runs; the
# Debian package is built from a staged run of it). Inputs, all from the
# environment (the Makefile sets them; see README "Installing"):
#   BUILD_DIR         cargo's output directory (target/release or target/debug)
#   DESTDIR PREFIX BINDIR SBINDIR MANDIR SYSCONFDIR SLURM_SYSCONFDIR
#   SYSTEMD_UNIT_DIR BASH_COMPLETION_DIR ZSH_COMPLETION_DIR STATEDIR CACHEDIR
#   SLURM_PLUGIN_DIR  (default: detected by slurm-plugin-dir.sh)
#   SHIFTER_SETUID    yes (default): shifter 4755 root:root; no: 0755 without
#                     the setuid bit, so only root can start containers with it
#   STRIP             yes: strip debug information from the installed binaries
# `install.sh uninstall` removes what it installed except the configuration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

: "${BUILD_DIR:?}" "${PREFIX:=/usr/local}"
DESTDIR=${DESTDIR:-}
BINDIR=${BINDIR:-$PREFIX/bin}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
MANDIR=${MANDIR:-$PREFIX/share/man}
SYSCONFDIR=${SYSCONFDIR:-/etc}
SLURM_SYSCONFDIR=${SLURM_SYSCONFDIR:-$SYSCONFDIR/slurm}
SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-$PREFIX/lib/systemd/system}
BASH_COMPLETION_DIR=${BASH_COMPLETION_DIR:-$PREFIX/share/bash-completion/completions}
ZSH_COMPLETION_DIR=${ZSH_COMPLETION_DIR:-$PREFIX/share/zsh/site-functions}
STATEDIR=${STATEDIR:-/var/lib/shifter}
CACHEDIR=${CACHEDIR:-/var/cache/shifter}
SLURM_PLUGIN_DIR=${SLURM_PLUGIN_DIR:-$("$here/slurm-plugin-dir.sh")}
SHIFTER_SETUID=${SHIFTER_SETUID:-yes}
STRIP=${STRIP:-no}

if [ "${1:-}" = uninstall ]; then
    rm -fv "$DESTDIR$BINDIR"/{shifter,shifterimg,shifter-config} "$DESTDIR$SBINDIR/shifter-imagegw" \
        "$DESTDIR$SLURM_PLUGIN_DIR/shifter_spank.so" "$DESTDIR$SYSTEMD_UNIT_DIR/shifter-imagegw.service" \
        "$DESTDIR$MANDIR"/man1/{shifter,shifterimg,shifter-config}*.1.gz "$DESTDIR$MANDIR/man8/shifter-imagegw.8.gz" \
        "$DESTDIR$MANDIR/man5/shifter.toml.5.gz" \
        "$DESTDIR$BASH_COMPLETION_DIR"/{shifter,shifterimg,shifter-config,shifter-imagegw} \
        "$DESTDIR$ZSH_COMPLETION_DIR"/{_shifter,_shifterimg,_shifter-config,_shifter-imagegw}
    say "kept $SYSCONFDIR/shifter/ and $SLURM_SYSCONFDIR/plugstack.conf.d/shifter.conf (remove them by hand)"
    exit 0
fi

for f in shifter shifterimg shifter-config shifter-imagegw shifter-docs libshifter_spank.so; do
    [ -f "$BUILD_DIR/$f" ] || die "$BUILD_DIR/$f is missing: build first (make install builds it)"
done
# Files are root's unless a non-root user stages into a DESTDIR (the package
# build then sets the owners).
own=()
[ "$(id -u)" = 0 ] && own=(-o root -g root)
strip_opt=()
[ "$STRIP" = yes ] && strip_opt=(--strip --strip-program=strip)

bin() { # MODE SRC DEST
    install -D "${own[@]}" "${strip_opt[@]}" -m "$1" "$BUILD_DIR/$2" "$DESTDIR$3"
}
bin 0755 shifterimg "$BINDIR/shifterimg"
bin 0755 shifter-config "$BINDIR/shifter-config"
bin 0755 shifter-imagegw "$SBINDIR/shifter-imagegw"
case $SHIFTER_SETUID in
    yes) bin 4755 shifter "$BINDIR/shifter" ;;
    no) bin 0755 shifter "$BINDIR/shifter"
        say "shifter installed without the setuid bit: only root can run containers with it" ;;
    *) die "SHIFTER_SETUID must be yes or no, not '$SHIFTER_SETUID'" ;;
esac
# Slurm loads plugins with dlopen; they need not be executable.
bin 0644 libshifter_spank.so "$SLURM_PLUGIN_DIR/shifter_spank.so"

# Man pages and completions, generated from the commands' definitions.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$BUILD_DIR/shifter-docs" "$gen" >/dev/null
for page in "$gen"/man/man*/*; do
    sect=$(basename "$(dirname "$page")")
    install -d "$DESTDIR$MANDIR/$sect"
    gzip -9n <"$page" >"$DESTDIR$MANDIR/$sect/$(basename "$page").gz"
    chmod 0644 "$DESTDIR$MANDIR/$sect/$(basename "$page").gz"
done
for f in "$gen"/completions/bash/*; do install -D -m 0644 "$f" "$DESTDIR$BASH_COMPLETION_DIR/$(basename "$f")"; done
for f in "$gen"/completions/zsh/*; do install -D -m 0644 "$f" "$DESTDIR$ZSH_COMPLETION_DIR/$(basename "$f")"; done

# The gateway's unit, with this install's paths.
install -d "$DESTDIR$SYSTEMD_UNIT_DIR"
sed -e "s|@SBINDIR@|$SBINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" \
    -e "s|@STATEDIR@|$STATEDIR|g" -e "s|@CACHEDIR@|$CACHEDIR|g" \
    "$here/shifter-imagegw.service.in" >"$DESTDIR$SYSTEMD_UNIT_DIR/shifter-imagegw.service"
chmod 0644 "$DESTDIR$SYSTEMD_UNIT_DIR/shifter-imagegw.service"

# Configuration: examples, never replacing a file the site already has.
config() { # SRC DEST [WHAT WOULD HAVE BEEN INSTALLED]
    if [ -e "$DESTDIR$2" ]; then
        say "kept existing $DESTDIR$2 (the shipped one: ${3:-$1})"
    else
        install -D "${own[@]}" -m 0644 "$1" "$DESTDIR$2"
    fi
}
config "$here/etc/shifter.toml" "$SYSCONFDIR/shifter/shifter.toml"
config "$here/etc/imagegw.toml" "$SYSCONFDIR/shifter/imagegw.toml"
snippet=$(mktemp)
{
    echo "# shifter-rs: adds --image, --volume and --module to srun, sbatch and salloc."
    echo "# The plugin reads its config only for jobs that use --image."
    echo "required $SLURM_PLUGIN_DIR/shifter_spank.so config=$SYSCONFDIR/shifter/shifter.toml"
} >"$snippet"
config "$snippet" "$SLURM_SYSCONFDIR/plugstack.conf.d/shifter.conf" "$(tail -n 1 "$snippet")"
rm -f "$snippet"

if [ -z "$DESTDIR" ]; then
    say "installed under $PREFIX; plugin in $SLURM_PLUGIN_DIR"
    say "next: create the gateway account and directories (README, 'Installing from source')"
fi
