#!/usr/bin/env python3
"""Builds the shifter-rs test images as OCI image layouts, bit-for-bit reproducibly.

No network, stdlib only. Every tar entry has a fixed mtime, owner and mode; gzip
streams carry mtime 0; JSON is sorted. Two runs give identical digests.

Images (each an OCI layout with one tag, "latest"):
  busybox  one layer: static busybox + applet links, passwd/group/os-release, capcheck
  layered  busybox + two layers exercising whiteouts, opaque dirs, hardlinks,
           symlinks, file->dir replacement, non-root owners, devices, fifo,
           setuid-root and security.capability (PAX xattr) helpers
  multi    an OCI index with linux/amd64 and linux/arm64 images
  mpi      (with --mpi-programs) busybox + a glibc userland copied from the
           build host: the C library, MPICH, libpmix and what they load, and
           the MPI and PMIx test programs in /usr/local/bin
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile

EPOCH = 0  # SOURCE_DATE_EPOCH for every entry
MTIME = 1700000000  # a fixed, non-zero mtime so tests can see mtimes are kept


class Layer:
    """An in-memory tar layer with helpers that pin every attribute."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0, pax=None):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = MTIME
        if pax:
            ti.pax_headers = pax
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0, pax=None):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, pax)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)

    def fifo(self, name, mode=0o644):
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, mode))

    def chardev(self, name, major, minor, mode=0o666):
        ti = self._info(name, tarfile.CHRTYPE, mode)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)

    def finish(self, level=6):
        self.tar.close()
        raw = self.buf.getvalue()
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=level) as g:
            g.write(raw)
        return raw, gz.getvalue()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data):
        d = digest(data)
        p = os.path.join(self.path, "blobs", "sha256", d.split(":")[1])
        with open(p, "wb") as f:
            f.write(data)
        return d

    def image(self, layers, config_extra, arch="amd64"):
        """Writes layers + config + manifest; returns the manifest descriptor."""
        diff_ids, descs = [], []
        for raw, gz in layers:
            diff_ids.append(digest(raw))
            descs.append({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": self.blob(gz),
                "size": len(gz),
            })
        config = {
            "architecture": arch,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config_extra,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mkoci.py"}
                        for _ in layers],
        }
        cfg = canon(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.blob(cfg),
                "size": len(cfg),
            },
            "layers": descs,
        }
        m = canon(manifest)
        return {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.blob(m),
            "size": len(m),
            "platform": {"architecture": arch, "os": "linux"},
        }

    def index(self, manifests_desc, tag="latest"):
        """Writes index.json pointing at one manifest or a nested image index."""
        if len(manifests_desc) == 1:
            desc = dict(manifests_desc[0])
            desc.pop("platform", None)
        else:
            nested = canon({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": manifests_desc,
            })
            desc = {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": self.blob(nested),
                "size": len(nested),
            }
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        top = {"schemaVersion": 2, "manifests": [desc]}
        with open(os.path.join(self.path, "index.json"), "wb") as f:
            f.write(canon(top))


def os_release(ident, name):
    return (f'NAME="{name}"\nID={ident}\nVERSION_ID=1.0\n'
            f'PRETTY_NAME="{name} (shifter-rs test image)"\n')


def busybox_applets(busybox):
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True)
    return sorted(set(l.strip() for l in out.stdout.splitlines() if l.strip()))


def base_layer(busybox_bin, applets, capcheck):
    l = Layer()
    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin",
              "etc", "root", "home", "opt", "opt/olddir", "srv", "var", "var/tmp", "data"]:
        l.dir(d, 0o700 if d == "root" else 0o755)
    l.dir("tmp", 0o1777)
    l.file("bin/busybox", busybox_bin, 0o755)
    for a in applets:
        if a != "bin/busybox":
            l.symlink(a, "/bin/busybox")
    l.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    l.file("etc/group", "root:x:0:\nnogroup:x:65534:\n")
    l.file("etc/os-release", os_release("shifter-busybox", "Shifter Busybox"))
    l.file("etc/deleteme", "this file is whited out by the layered image\n")
    l.file("etc/hostname", "image\n")
    l.file("opt/olddir/a", "old a\n")
    l.file("opt/olddir/b", "old b\n")
    l.file("srv/replaceme", "a file that a later layer replaces with a directory\n")
    l.file("data/orig", "hardlinked content\n")
    l.file("usr/local/bin/capcheck", capcheck, 0o755)
    return l.finish()


def vfs_cap_v2(permitted):
    """struct vfs_cap_data, revision 2, effective flag set."""
    magic = 0x02000000 | 0x1
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def layered_layers(capcheck):
    l2 = Layer()
    l2.file("etc/.wh.deleteme", b"")
    l2.dir("opt/olddir")
    l2.file("opt/olddir/.wh..wh..opq", b"")
    l2.file("opt/olddir/new", "new in layer 2\n")
    l2.dir("srv/replaceme")
    l2.file("srv/replaceme/inside", "file inside the directory that replaced a file\n")
    l2.hardlink("data/hard1", "data/orig")
    l2.hardlink("data/hard2", "data/orig")
    l2.symlink("data/abs", "/etc/os-release")
    l2.symlink("data/rel", "../etc/os-release")
    l2.symlink("data/rootlink", "/")
    l2.dir("data/owned", 0o700, uid=1234, gid=1234)
    l2.file("data/owned/secret", "owned by 1234\n", 0o600, uid=1234, gid=1234)
    l2.file("usr/local/bin/capcheck-suid", capcheck, 0o4755)
    l2.file("usr/local/bin/capcheck-sgid", capcheck, 0o2755, gid=50)
    caps = (1 << 7) | (1 << 1) | (1 << 21)  # CAP_SETUID, CAP_DAC_OVERRIDE, CAP_SYS_ADMIN
    xattr = vfs_cap_v2(caps).decode("utf-8", "surrogateescape")
    l2.file("usr/local/bin/capcheck-xattr", capcheck, 0o755,
            pax={"SCHILY.xattr.security.capability": xattr})
    l3 = Layer()
    l3.file("etc/os-release", os_release("shifter-layered", "Shifter Layered"))
    l3.dir("dev")
    l3.fifo("dev/testfifo")
    l3.chardev("dev/testnull", 1, 3)
    l3.file("data/.wh.hard1", b"")
    return [l2.finish(), l3.finish()]


def arm_layer():
    l = Layer()
    l.dir("etc")
    l.file("etc/os-release", os_release("shifter-arm64", "Shifter arm64 stand-in"))
    return l.finish()


def shared_libraries(programs):
    """The shared libraries the programs load and the loader, as host paths,
    from ldd (so what the build host's loader resolves, with its deps)."""
    found = set()
    for prog in programs:
        out = subprocess.run(["ldd", prog], check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = line.split()
            if "=>" in parts:
                target = parts[parts.index("=>") + 1]
                if target.startswith("/"):
                    found.add(target)
            elif parts and parts[0].startswith("/"):
                found.add(parts[0])  # the loader: /lib64/ld-linux-x86-64.so.2
    return sorted(found)


MULTIARCH = "usr/lib/x86_64-linux-gnu"


def mpi_layer(programs):
    """An image's own userland: every library of the programs under the
    name the loader asked for, in the multiarch directory (/lib is a link to
    /usr/lib, as on a merged-/usr Debian), with the loader at its ELF path."""
    l = Layer()
    for d in ["usr/lib", MULTIARCH, "lib64", "etc"]:
        l.dir(d)
    l.symlink("lib", "usr/lib")
    for lib in shared_libraries(programs):
        with open(os.path.realpath(lib), "rb") as f:
            data = f.read()
        name = os.path.basename(lib)
        if lib.startswith("/lib64/"):
            l.file(f"{MULTIARCH}/{name}", data, 0o755)
            l.symlink(f"lib64/{name}", f"/{MULTIARCH}/{name}")
        else:
            l.file(f"{MULTIARCH}/{name}", data, 0o644)
    for prog in programs:
        with open(prog, "rb") as f:
            l.file(f"usr/local/bin/{os.path.basename(prog)}", f.read(), 0o755)
    l.file("etc/os-release", os_release("shifter-mpi", "Shifter MPI"))
    return l.finish(level=1)  # 60 MB of libraries: level 6 takes seconds more for 10% less


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to create the layouts in")
    ap.add_argument("--busybox", default="/bin/busybox", help="a static busybox binary")
    ap.add_argument("--capcheck", required=True, help="the static capcheck helper")
    ap.add_argument("--mpi-programs", nargs="*", default=[],
                    help="dynamically linked programs for the mpi image (built against MPICH/PMIx)")
    args = ap.parse_args()

    with open(args.busybox, "rb") as f:
        busybox_bin = f.read()
    with open(args.capcheck, "rb") as f:
        capcheck = f.read()
    applets = busybox_applets(args.busybox)
    config = {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "SHIFTER_TEST_IMAGE=busybox"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
        "Labels": {"org.shifter-rs.test": "busybox"},
    }
    base = base_layer(busybox_bin, applets, capcheck)

    bb = Layout(os.path.join(args.out, "busybox"))
    bb.index([bb.image([base], config)])

    lay = Layout(os.path.join(args.out, "layered"))
    lconfig = dict(config, Env=config["Env"][:1] + ["SHIFTER_TEST_IMAGE=layered"],
                   Entrypoint=["/bin/echo", "entrypoint"], Cmd=["layered-cmd"],
                   WorkingDir="/data", Labels={"org.shifter-rs.test": "layered"})
    lay.index([lay.image([base] + layered_layers(capcheck), lconfig)])

    multi = Layout(os.path.join(args.out, "multi"))
    mconfig = dict(config, Env=config["Env"][:1] + ["SHIFTER_TEST_IMAGE=multi"])
    amd = multi.image([base], mconfig, "amd64")
    arm = multi.image([arm_layer()], mconfig, "arm64")
    multi.index([amd, arm])

    if args.mpi_programs:
        mpi = Layout(os.path.join(args.out, "mpi"))
        mpiconfig = dict(config, Env=config["Env"][:1] + ["SHIFTER_TEST_IMAGE=mpi"],
                         Labels={"org.shifter-rs.test": "mpi"})
        mpi.index([mpi.image([base, mpi_layer(args.mpi_programs)], mpiconfig)])


if __name__ == "__main__":
    main()
