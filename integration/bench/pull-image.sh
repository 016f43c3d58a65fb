#!/usr/bin/env bash
# Registry → finished squashfs: shifter-pull against the pipeline Shifter's and
# Sarus's gateways use (skopeo copy + umoci raw unpack + mksquashfs -no-xattrs) and
# against the floors (fetch + sha256 of every blob; decompressing every layer;
# sqfs-writer's dir2sqfs on the pre-merged tree; tar2sqfs on it, when installed).
# Wall, CPU, peak RSS, output size, then the ratios (medians) side by side.
#
# The image (BENCH_IMAGE):
#   debootstrap (default)  debootstrap-image.sh: minbase bookworm, + python3,
#                          + python3-numpy, + a whiteout layer; about 300 MiB of tar,
#                          100 MiB compressed, 8,000 entries. Built once (needs a
#                          Debian mirror) and cached in $BENCH_CACHE.
#   local                  built from this machine's own files, no network: 3 gzip
#                          layers plus a whiteout layer, about 280 MiB of tar and
#                          5,000 entries.
# It is pushed to the local registry as bench/pull:latest.
#   SHIFTER_REGISTRY  registry (default 127.0.0.1:5000)   RUNS  runs each (default 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reg=${SHIFTER_REGISTRY:-127.0.0.1:5000}
runs=${RUNS:-3}
for t in skopeo umoci mksquashfs python3 curl; do
    command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time (Debian package time) is needed" >&2; exit 1; }
curl -sf "http://$reg/v2/" >/dev/null || { echo "no registry at $reg (make cluster-up)" >&2; exit 1; }

(cd "$root" && cargo build --quiet --release -p shifter-pull --example pull -p sqfs-writer --example dir2sqfs)
bin="${CARGO_TARGET_DIR:-$root/target}/release/examples"
work=$(mktemp -d /var/tmp/pull-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- the image -----------------------------------------------------------------
local_image() {
python3 - "$1" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
def layer(fill):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        fill(t)
    raw = raw.getvalue()
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    return raw, gz
def add_tree(t, src, dst):
    t.add(src, arcname=dst, recursive=True, filter=lambda ti: ti if ti.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE) else None)
def l1(t):
    add_tree(t, "/usr/lib/python3.11", "usr/lib/python3.11"); add_tree(t, "/usr/lib/python3", "usr/lib/python3")
def l2(t):
    add_tree(t, "/usr/lib/gcc", "usr/lib/gcc"); add_tree(t, "/usr/libexec", "usr/libexec")
def l3(t):
    for name in ["usr/lib/python3.11/.wh.test", "usr/lib/python3/dist-packages/.wh..wh..opq"]:
        ti = tarfile.TarInfo(name); t.addfile(ti, io.BytesIO(b""))
    data = b"changed by the top layer\n"
    ti = tarfile.TarInfo("usr/lib/python3.11/os.py"); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
layers = [layer(f) for f in (l1, l2, l3)]
descs, diff_ids = [], []
for raw, gz in layers:
    d, n = blob(gz)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
cfg = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
       "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
cd, cn = blob(json.dumps(cfg, sort_keys=True).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn}, "layers": descs}
md, mn = blob(json.dumps(man, sort_keys=True).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": man["mediaType"], "digest": md, "size": mn,
           "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
print(f"image: {len(layers)} layers, {sum(len(r) for r, _ in layers) >> 20} MiB of tar, {sum(len(g) for _, g in layers) >> 20} MiB compressed")
PY
}
case ${BENCH_IMAGE:-debootstrap} in
    debootstrap) "$here/debootstrap-image.sh" "$work/layout" ;;
    local) local_image "$work/layout" ;;
    *) echo "BENCH_IMAGE must be debootstrap or local" >&2; exit 1 ;;
esac
python3 - "$work/layout" <<'PY'
import json, os, sys
out = sys.argv[1]
blob = lambda d: f"{out}/blobs/sha256/{d[7:]}"
man = json.load(open(blob(json.load(open(f"{out}/index.json"))["manifests"][0]["digest"])))
print(f"image: {len(man['layers'])} layers, {sum(l['size'] for l in man['layers']) >> 20} MiB compressed")
PY
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:latest" "docker://$reg/bench/pull:latest"
ref="$reg/bench/pull:latest"
layers=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" ".join(l["digest"] for l in m["layers"]))' \
    "$work/layout/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"][7:])' "$work/layout/index.json")")

# ---- measurements ----------------------------------------------------------------
# Round by round (every pipeline once per round), so a machine whose speed drifts
# over the minutes of a run slows all of them alike and the ratios stay fair.
printf '%-26s %8s %8s %9s %12s\n' what wall_s cpu_s rss_mib bytes
measure() { # label output-file command...
    local label=$1 out=$2; shift 2
    rm -rf "$work/run"; mkdir -p "$work/run"
    /usr/bin/time -o "$work/t" -f '%e %U %S %M' "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/t"
    local size=0
    [ -n "$out" ] && size=$(stat -c %s $out)
    awk -v l="$label" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v b="$size" \
        'BEGIN { printf "%-26s %8.2f %8.2f %9.1f %12d\n", l, w, u + s, r / 1024, b }'
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$wall" "$rss" "$size" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" >>"$work/results"
}
anchor='skopeo copy --quiet --src-tls-verify=false docker://'"$ref"' oci:'"$work"'/run/oci:x &&
    umoci raw unpack --image '"$work"'/run/oci:x '"$work"'/run/rootfs &&
    mksquashfs '"$work"'/run/rootfs '"$work"'/run/out.sqfs -noappend -no-xattrs -comp gzip -quiet -no-progress'
fetch='for d in '"$layers"'; do curl -sf http://'"$reg"'/v2/bench/pull/blobs/$d | sha256sum >/dev/null; done'
umoci raw unpack --image "$work/layout:latest" "$work/merged" >/dev/null 2>&1
# The issue's tar2sqfs floor (squashfs-tools-ng, zlib) when installed; the writer-only
# floor above (same writer and level as shifter-pull) is the stricter one.
tar2sqfs=$(command -v tar2sqfs || true)
if [ -n "$tar2sqfs" ]; then
    tar -C "$work/merged" -cf "$work/merged.tar" .
else
    echo "tar2sqfs not installed (apt-get install squashfs-tools-ng): its floor is skipped" >&2
fi
for round in $(seq "$runs"); do
    echo "# round $round of $runs"
    for comp in ${PULL_COMPS:-gzip zstd:3 lz4}; do
        measure "shifter-pull $comp" "$work/run/*.squashfs" \
            "$bin/pull" "$ref" "$work/run" --plain-http "$reg" --compression "$comp" --cache "$work/run/cache"
    done
    measure "floor dir2sqfs merged gzip" "$work/run/out.sqfs" "$bin/dir2sqfs" "$work/merged" "$work/run/out.sqfs" gzip 131072 "$(nproc)"
    if [ -n "$tar2sqfs" ]; then
        measure "floor tar2sqfs merged gzip" "$work/run/out.sqfs" bash -c \
            "$tar2sqfs -q -x -j $(nproc) -c gzip $work/run/out.sqfs <$work/merged.tar"
    fi
    measure "floor fetch+sha256" "" bash -c "$fetch"
    measure "floor decompress layers" "" bash -c 'for f in '"$work"'/layout/blobs/sha256/*; do gzip -dc <"$f" >/dev/null 2>&1 || true; done'
    measure "anchor skopeo+umoci+mksq" "$work/run/out.sqfs" bash -c "$anchor"
    measure "mksquashfs merged gzip" "$work/run/out.sqfs" mksquashfs "$work/merged" "$work/run/out.sqfs" -noappend -no-xattrs -comp gzip -quiet -no-progress
done

# ---- ratios (medians of the runs above) ------------------------------------------
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, wall, rss, size, cpu = line.rstrip("\n").split("\t")
    rows.setdefault(label, []).append((float(wall), int(rss), int(size), float(cpu)))
med = {l: statistics.median(w for w, _, _, _ in r) for l, r in rows.items()}
size = {l: r[-1][2] for l, r in rows.items()}
print()
print(f"{'medians':<26} {'wall_s':>8} {'cpu_s':>8} {'rss_mib':>9} {'bytes':>12}")
for l, r in rows.items():
    print(f"{l:<26} {med[l]:8.2f} {statistics.median(c for _, _, _, c in r):8.2f} "
          f"{max(x for _, x, _, _ in r) / 1024:9.1f} {size[l]:12d}")
anchor, floor = med["anchor skopeo+umoci+mksq"], med["floor dir2sqfs merged gzip"]
print()
for l in sorted(l for l in rows if l.startswith("shifter-pull")):
    rss = max(r for _, r, _, _ in rows[l]) / 1024
    line = f"{l:<26} {med[l]:6.2f} s  peak RSS {rss:5.1f} MiB  {anchor / med[l]:5.2f}x faster than the anchor"
    if l == "shifter-pull gzip":
        line += f", {med[l] / floor:4.2f}x the dir2sqfs floor"
        if "floor tar2sqfs merged gzip" in med:
            line += f" ({med[l] / med['floor tar2sqfs merged gzip']:4.2f}x tar2sqfs')"
        line += (f", output "
                 f"{100 * (size[l] / size['anchor skopeo+umoci+mksq'] - 1):+.1f}% vs mksquashfs")
    print(line)
PY
