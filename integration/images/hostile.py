#!/usr/bin/env python3
"""Builds hostile OCI images for integration/tests/hostile.rs and pushes them.

Stdlib only, offline, reproducible (the Layer/Layout helpers of mkoci.py pin every
attribute). Each image is an OCI layout under OUT/<name>; with --push REGISTRY
it is uploaded to http://REGISTRY as hostile/<name>:latest through the plain
registry v2 API, so bytes that skopeo would refuse or rewrite (bad tar checksums,
truncated gzip) reach the registry unchanged.

Images ("-> rejected" must end in FAILURE, "-> neutralised" in READY):
  dotdot          an entry named ../../escape                      -> rejected
  absolute        an entry named /etc/evil                         -> rejected
  whiteout-dots   a whiteout of ".." (etc/.wh...)                 -> rejected
  symlink-escape  layer 1: etc -> /etc; layer 2: etc/cron.d/x      -> rejected
  symlink-relative  layer 1: up -> ../../../../../tmp; layer 2: up/pwned -> rejected
  hardlink-via-symlink  layer 1: etcl -> /etc; layer 2: a hardlink to etcl/shadow
                                                                   -> neutralised (dropped)
  hardlink-out    a hardlink to ../../../etc/shadow               -> rejected
  hardlink-abs    a hardlink to /etc/shadow                        -> rejected
  bomb            8 MiB of zeros in ~10 KiB of gzip                 -> rejected (cap)
  sparse-bomb     a GNU sparse entry of 8 GiB of hole in 2 KiB of tar -> rejected (cap)
  entries         1,500 empty files                                -> rejected (cap)
  truncated-gzip  a gzip layer cut in the middle                   -> rejected
  truncated-zstd  a zstd layer cut in the middle (needs the zstd CLI) -> rejected
  bad-checksum    a tar whose first header checksum is wrong       -> rejected
  long-path       a 4096-byte path (PAX)                           -> kept
  weird-names     a file name with a newline, one with invalid UTF-8 -> kept
  no-platform     an OCI index with only linux/arm64               -> rejected
  neutral         busybox + devices, fifo, socket, setuid/setgid, PAX xattrs
                  (security.capability, user.*), a hardlink to a whited-out file
                                                                   -> neutralised
"""

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkoci  # noqa: E402  (the shared, reproducible helpers)
from mkoci import Layer, Layout, canon  # noqa: E402

CAP_SETUID_ETC = (1 << 7) | (1 << 1) | (1 << 21)


def gz(raw):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(raw)
    return out.getvalue()


def small_base():
    l = Layer()
    l.dir("etc")
    l.file("etc/os-release", mkoci.os_release("shifter-hostile", "Shifter Hostile"))
    return l.finish()


def one_layer(build):
    """A layer built by `build(layer)` on top of the small base."""
    l = Layer()
    build(l)
    return [small_base(), l.finish()]


def raw_entry(name, kind=tarfile.REGTYPE, linkname="", data=b""):
    """A layer with one entry whose name tarfile would otherwise normalise."""
    l = Layer()
    ti = l._info(name, kind, 0o644)
    ti.linkname = linkname
    ti.size = len(data)
    l.tar.addfile(ti, io.BytesIO(data) if data else None)
    return l.finish()


def bomb():
    l = Layer()
    l.file("zeros", b"\0" * (8 << 20))
    return [small_base(), l.finish()]


def sparse_bomb():
    """One GNU sparse entry ('S') whose map is a single hole of 8 GiB - 1: the tar
    reader makes the zeros up without reading anything. tarfile cannot write sparse
    entries, so the header is laid out by hand (GNU format, octal fields)."""
    real = 0o77777777777

    def octal(n, width):
        return ("%0*o" % (width - 1, n)).encode() + b"\0"

    h = bytearray(512)
    h[0:10] = b"sparsefile"
    h[100:108] = octal(0o644, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = octal(0, 12)
    h[136:148] = octal(0, 12)
    h[156:157] = b"S"
    h[257:265] = b"ustar  \0"
    h[386:398] = octal(real, 12)  # sparse[0].offset: the data starts after the hole
    h[398:410] = octal(0, 12)  # sparse[0].numbytes: and there is none
    h[483:495] = octal(real, 12)  # realsize
    h[148:156] = b" " * 8
    h[148:156] = ("%06o\0 " % sum(h)).encode()
    raw = bytes(h) + b"\0" * 1024
    return [small_base(), (raw, gz(raw))]


def many_entries():
    l = Layer()
    l.dir("many")
    for i in range(1500):
        l.file(f"many/f{i:04}", b"")
    return [small_base(), l.finish()]


def truncated_gzip():
    l = Layer()
    l.file("payload", bytes(range(256)) * 2048)  # 512 KiB that does not compress away
    raw, g = l.finish()
    return [small_base(), (raw, g[: len(g) // 2])]


def truncated_zstd():
    l = Layer()
    l.file("payload", bytes(range(256)) * 2048)
    raw, _ = l.finish()
    z = subprocess.run(["zstd", "-q", "-c", "-19"], input=raw, check=True,
                       capture_output=True).stdout
    return [small_base(), (raw, z[: len(z) // 2])]


def bad_checksum():
    l = Layer()
    l.file("hello", "checksum me\n")
    raw, _ = l.finish()
    raw = bytearray(raw)
    # The first header is a PAX extended header or the file's own: either way its
    # checksum field (offset 148, 8 bytes) no longer matches.
    raw[148:156] = b"0000001\0"
    raw = bytes(raw)
    return [small_base(), (raw, gz(raw))]


def long_path():
    l = Layer()
    # 4096 bytes with the separators, over PATH_MAX with the terminating NUL.
    comps = ["d" * 254 for _ in range(16)]
    path = "/".join(comps)
    path += "/" + "f" * (4096 - len(path) - 1)
    assert len(path) == 4096
    l.file(path, "deep\n")
    return [small_base(), l.finish()]


def weird_names():
    l = Layer()
    l.dir("weird")
    l.file("weird/new\nline", "newline\n")
    l.file("weird/bad-\udcff-utf8", "latin1\n")
    return [small_base(), l.finish()]


def neutral(busybox_bin, applets, capcheck):
    base = mkoci.base_layer(busybox_bin, applets, capcheck)
    l2 = Layer()
    l2.dir("dev")
    l2.chardev("dev/mem", 1, 1, 0o666)
    l2.fifo("dev/hostile-fifo")
    l2.hardlink("data/to-be-whited", "data/orig")
    ti = l2._info("dev/hostile-blk", tarfile.BLKTYPE, 0o666)
    ti.devmajor, ti.devminor = 8, 0
    l2.tar.addfile(ti)
    l2.file("usr/local/bin/suid-root", capcheck, 0o4755)
    l2.file("usr/local/bin/sgid-root", capcheck, 0o2755)
    xattr = mkoci.vfs_cap_v2(CAP_SETUID_ETC).decode("utf-8", "surrogateescape")
    l2.file("usr/local/bin/cap-xattr", capcheck, 0o755,
            pax={"SCHILY.xattr.security.capability": xattr,
                 "SCHILY.xattr.user.hostile": "yes",
                 "SCHILY.xattr.trusted.overlay.opaque": "y"})
    l3 = Layer()
    l3.file("data/.wh.orig", b"")
    l3.hardlink("data/link-to-whited", "data/orig")
    return [base, l2.finish(), l3.finish()]


def image_config(name):
    return {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                f"SHIFTER_TEST_IMAGE=hostile-{name}"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
    }


def build(out, busybox, capcheck):
    with open(busybox, "rb") as f:
        busybox_bin = f.read()
    with open(capcheck, "rb") as f:
        capcheck_bin = f.read()
    applets = mkoci.busybox_applets(busybox)
    images = {
        "dotdot": lambda: [small_base(), raw_entry("../../escape", data=b"x\n")],
        "absolute": lambda: [small_base(), raw_entry("/etc/evil", data=b"x\n")],
        "symlink-escape": lambda: [
            small_base(),
            raw_entry("etcl", tarfile.SYMTYPE, "/etc"),
            raw_entry("etcl/cron.d/x", data=b"* * * * * root id\n"),
        ],
        "symlink-relative": lambda: [
            small_base(),
            raw_entry("up", tarfile.SYMTYPE, "../../../../../tmp"),
            raw_entry("up/pwned", data=b"x\n"),
        ],
        "hardlink-via-symlink": lambda: [
            small_base(),
            raw_entry("etcl", tarfile.SYMTYPE, "/etc"),
            raw_entry("stolen", tarfile.LNKTYPE, "etcl/shadow"),
        ],
        "whiteout-dots": lambda: [
            small_base(),
            raw_entry("etc/.wh...", data=b""),
            raw_entry(".wh...", data=b""),
        ],
        "hardlink-out": lambda: [small_base(),
                                 raw_entry("stolen", tarfile.LNKTYPE, "../../../etc/shadow")],
        "hardlink-abs": lambda: [small_base(),
                                 raw_entry("stolen", tarfile.LNKTYPE, "/etc/shadow")],
        "bomb": bomb,
        "sparse-bomb": sparse_bomb,
        "entries": many_entries,
        "truncated-gzip": truncated_gzip,
        "bad-checksum": bad_checksum,
        "long-path": long_path,
        "weird-names": weird_names,
        "neutral": lambda: neutral(busybox_bin, applets, capcheck_bin),
    }
    # The zstd CLI (Debian package zstd) is optional: without it the test skips that case.
    if shutil.which("zstd"):
        images["truncated-zstd"] = truncated_zstd
    for name, layers in images.items():
        lay = Layout(os.path.join(out, name))
        lay.index([lay.image(layers(), image_config(name))])
    arm = Layout(os.path.join(out, "no-platform"))
    arm_only = arm.image([small_base()], image_config("no-platform"), "arm64")
    # Two arm variants so index() writes a nested index rather than a bare manifest.
    arm_v7 = dict(arm_only, platform={"architecture": "arm", "os": "linux", "variant": "v7"})
    arm.index([arm_only, arm_v7])
    return sorted(list(images) + ["no-platform"])


# ---- pushing over the registry v2 API ------------------------------------------


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, dict(r.headers), r.read()


def push_blob(registry, repo, layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        data = f.read()
    base = f"http://{registry}"
    st, _, _ = http_ok("HEAD", f"{base}/v2/{repo}/blobs/{digest}")
    if st == 200:
        return
    _, h, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
    loc = h.get("Location") or h.get("location")
    if loc.startswith("/"):
        loc = base + loc
    sep = "&" if "?" in loc else "?"
    http("PUT", f"{loc}{sep}digest={digest}", data,
         {"Content-Type": "application/octet-stream"})


def http_ok(method, url):
    try:
        return http(method, url)
    except urllib.error.HTTPError as e:
        return e.code, {}, b""


def push_manifest(registry, repo, layout, desc, ref):
    with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":")[1]), "rb") as f:
        body = f.read()
    doc = json.loads(body)
    if "manifests" in doc:
        for child in doc["manifests"]:
            push_manifest(registry, repo, layout, child, child["digest"])
    else:
        for blob in [doc["config"]] + doc["layers"]:
            push_blob(registry, repo, layout, blob["digest"])
    http("PUT", f"http://{registry}/v2/{repo}/manifests/{ref}", body,
         {"Content-Type": desc["mediaType"]})


def push(registry, out, name):
    layout = os.path.join(out, name)
    with open(os.path.join(layout, "index.json")) as f:
        desc = json.load(f)["manifests"][0]
    push_manifest(registry, f"hostile/{name}", layout, desc, "latest")
    return desc["digest"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to create the layouts in")
    ap.add_argument("--busybox", default="/bin/busybox", help="a static busybox binary")
    ap.add_argument("--capcheck", required=True, help="the static capcheck helper")
    ap.add_argument("--push", metavar="REGISTRY", help="push to http://REGISTRY/hostile/<name>")
    args = ap.parse_args()
    names = build(args.out, args.busybox, args.capcheck)
    result = {}
    for n in names:
        result[n] = push(args.push, args.out, n) if args.push else None
    # One line the test parses: name -> pushed top-level digest.
    print(canon(result).decode())


if __name__ == "__main__":
    main()
