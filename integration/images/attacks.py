#!/usr/bin/env python3
"""Builds the images of integration/tests/attacks.rs as OCI image layouts.

Stdlib only, offline, reproducible (the Layer/Layout helpers of mkoci.py pin
every attribute). Each is the busybox test image with one system directory
replaced by an absolute symlink, the way a user's image may have it; the
runtime resolves such links inside the container root, where they can lead
onto a volume or a module mount that is a host directory:

  attack-etc-ssh-link     /etc/ssh    -> /data   (sshd's /etc/ssh/ssh_config)
  attack-etc-link         /etc        -> /data, and no /bin/sh (sshd's /etc/passwd
                          rewrite, made when the image lacks the user's shell;
                          the plugin's users have /bin/sh)
  attack-usr-bin-link     /usr/bin    -> /data   (sshd's /usr/bin/ssh wrapper)
  attack-opt-shifter-link /opt/shifter -> NODE_SPOOL (module destinations
                          /opt/shifter/<module>/...; NODE_SPOOL is a slurmd
                          spool dir that the pmix module binds from the host)
  attack-{proc,sys,dev,tmp}-link  /proc (/sys, /dev, /tmp) -> /data (the
                          runtime's own mounts onto a volume)
  attack-site-proc-link   /sitefake -> /proc (a site mount of a user-writable
                          directory at /sitefake would land on /proc: a fake
                          /proc for the runtime's later reads)

build.sh pushes them as attack/<name without "attack-">:latest.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mkoci import Layer, Layout, busybox_applets, os_release  # noqa: E402

DIRS = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin",
        "etc", "root", "home", "opt", "srv", "var", "var/tmp", "data"]


def linked_layer(busybox_bin, applets, capcheck, name, link, target, omit=()):
    """busybox, its applets and identity files, except that `link` (and
    everything the plain image has below it) is a symlink to `target`, and
    the entries `omit` are left out."""

    def kept(path):
        return path != link and not path.startswith(link + "/") and path not in omit

    l = Layer()
    for d in DIRS:
        if kept(d):
            l.dir(d, 0o700 if d == "root" else 0o755)
    if kept("tmp"):
        l.dir("tmp", 0o1777)
    parent = os.path.dirname(link)
    if parent and parent not in DIRS:
        l.dir(parent)
    l.symlink(link, target)
    l.file("bin/busybox", busybox_bin, 0o755)
    for a in applets:
        if a != "bin/busybox" and kept(a):
            l.symlink(a, "/bin/busybox")
    if kept("etc/passwd"):
        l.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        l.file("etc/group", "root:x:0:\n")
        l.file("etc/os-release", os_release(name, "Shifter attack image"))
    l.file("usr/local/bin/capcheck", capcheck, 0o755)
    return l.finish()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to create the layouts in")
    ap.add_argument("--busybox", default="/bin/busybox", help="a static busybox binary")
    ap.add_argument("--capcheck", required=True, help="the static capcheck helper")
    ap.add_argument("--node-spool", required=True,
                    help="the slurmd spool dir /opt/shifter points to (e.g. $SHIFTER_TB/spool/n1)")
    args = ap.parse_args()
    with open(args.busybox, "rb") as f:
        busybox_bin = f.read()
    with open(args.capcheck, "rb") as f:
        capcheck = f.read()
    applets = busybox_applets(args.busybox)
    images = {
        "attack-etc-ssh-link": ("etc/ssh", "/data", ()),
        "attack-etc-link": ("etc", "/data", ("bin/sh",)),
        "attack-usr-bin-link": ("usr/bin", "/data", ()),
        "attack-opt-shifter-link": ("opt/shifter", args.node_spool, ()),
        "attack-proc-link": ("proc", "/data", ()),
        "attack-sys-link": ("sys", "/data", ()),
        "attack-dev-link": ("dev", "/data", ()),
        "attack-tmp-link": ("tmp", "/data", ()),
        "attack-site-proc-link": ("sitefake", "/proc", ()),
    }
    for name, (link, target, omit) in images.items():
        config = {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    f"SHIFTER_TEST_IMAGE={name}"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "Labels": {"org.shifter-rs.test": name},
        }
        layer = linked_layer(busybox_bin, applets, capcheck, f"shifter-{name}", link, target,
                             omit)
        lay = Layout(os.path.join(args.out, name))
        lay.index([lay.image([layer], config)])
    print(" ".join(sorted(images)))


if __name__ == "__main__":
    main()
