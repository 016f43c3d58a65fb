#!/usr/bin/env bash
# Builds target/deb/shifter-rs_VERSION_ARCH.deb from a staged install.sh run
# (what `make deb` runs after building). Inputs from the environment:
#   BUILD_DIR        cargo's output directory (target/release or target/debug)
#   DEB_COMPRESSION  dpkg-deb -Z value (default xz; gzip builds much faster)
#   DEB_REVISION     Debian revision (default 1)
# Depends is computed here from what the binaries were built against: the
# shared libraries (dpkg-shlibdeps) and the installed Slurm's major release,
# since a SPANK plugin only works with the Slurm release it was built for.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
say() { printf '[deb] %s\n' "$*" >&2; }
die() { printf '[deb] error: %s\n' "$*" >&2; exit 1; }
: "${BUILD_DIR:?}"
out=$repo/target/deb
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

DESTDIR=$stage PREFIX=/usr SYSCONFDIR=/etc SYSTEMD_UNIT_DIR=/lib/systemd/system \
    ZSH_COMPLETION_DIR=/usr/share/zsh/vendor-completions STRIP=yes SHIFTER_SETUID=yes \
    "$here/install.sh"
doc=$stage/usr/share/doc/shifter-rs
install -d "$doc"
install -m 0644 "$repo/README.md" "$doc/README.md"
install -m 0644 "$here/debian/copyright" "$doc/copyright"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
[ -n "$version" ] || die "no workspace version in Cargo.toml"
version=$version-${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)

# dpkg-shlibdeps wants a source package around it.
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
mkdir "$shl/debian"
printf 'Source: shifter-rs\n\nPackage: shifter-rs\nArchitecture: any\n' >"$shl/debian/control"
elfs=()
while IFS= read -r f; do elfs+=("-e$f"); done < <(find "$stage/usr" -type f \( -path '*/bin/*' -o -path '*/sbin/*' -o -name '*.so' \))
shlibs=$(cd "$shl" && dpkg-shlibdeps -O "${elfs[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies"

if [ -n "${SLURM_DEPENDS:-}" ]; then
    slurm=$SLURM_DEPENDS
else
    sv=$(dpkg-query -W -f='${Version}' slurm-wlm-basic-plugins 2>/dev/null) ||
        die "Slurm is not installed from Debian packages: set SLURM_DEPENDS to the Depends entry for your Slurm"
    major=$(echo "$sv" | sed -n 's/^\([0-9]*\)\.\([0-9]*\)\..*/\1.\2/p')
    [ -n "$major" ] || die "cannot read a major release from Slurm's version $sv"
    next=$(echo "$major" | awk -F. '{printf "%s.%02d", $1, $2 + 1}')
    slurm="slurm-wlm-basic-plugins (>= $major), slurm-wlm-basic-plugins (<< $next~)"
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SHLIBS@|$shlibs|" \
    -e "s|@SLURM@|$slurm|" -e "s|@SIZE@|$size|" "$here/debian/control.in" >"$stage/DEBIAN/control"
install -m 0755 "$here"/debian/{postinst,prerm,postrm} "$stage/DEBIAN/"
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

deb=$out/shifter-rs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1)); Depends: $(sed -n 's/^Depends: //p' "$stage/DEBIAN/control")"
echo "$deb"
