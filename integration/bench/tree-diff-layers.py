#!/usr/bin/env python3
"""Commits successive root trees as the gzip layers of one OCI image, the way
`docker build` does: layer i holds what is new or changed in tree i against tree i-1,
whiteouts for what disappeared, and an opaque whiteout for a directory that was
emptied and refilled.

    tree-diff-layers.py OUT_LAYOUT TREE1 TREE2 ...
"""
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

SKIP_CONTENTS = {"dev", "proc", "sys", "run"}


def scan(root):
    """relpath -> comparable key, for every entry under root (not following links)."""
    entries = {}
    if root is None:
        return entries
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir in SKIP_CONTENTS:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind) or stat.S_ISLNK(kind)):
                continue  # device nodes, fifos and sockets never go into image layers
            link = os.readlink(path) if stat.S_ISLNK(kind) else None
            size = st.st_size if stat.S_ISREG(kind) else 0
            rel = os.path.normpath(os.path.join(rel_dir, name))
            entries[rel] = (kind, st.st_mode, st.st_uid, st.st_gid, size, st.st_mtime_ns, link)
    return entries


def children(entries):
    out = {}
    for rel in entries:
        out.setdefault(os.path.dirname(rel), set()).add(os.path.basename(rel))
    return out


def layer(old_root, new_root):
    old, new = scan(old_root), scan(new_root)
    old_kids, new_kids = children(old), children(new)
    opaque = {
        d for d, kids in old_kids.items()
        if d and d in new and d in old and not (kids & new_kids.get(d, set()))
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(set(old) | set(new), key=lambda p: p.split("/")):
            parent = os.path.dirname(rel)
            if rel not in new:
                if parent in new and parent not in opaque and parent in old:
                    tar.addfile(tarfile.TarInfo(os.path.join(parent, ".wh." + os.path.basename(rel))))
                continue
            if old.get(rel) != new[rel] or parent in opaque:
                info = tar.gettarinfo(os.path.join(new_root, rel), arcname=rel)
                if info.isreg() and not info.islnk():
                    with open(os.path.join(new_root, rel), "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            if rel in opaque:
                tar.addfile(tarfile.TarInfo(os.path.join(rel, ".wh..wh..opq")))
    return raw.getvalue()


def main():
    out, trees = sys.argv[1], sys.argv[2:]
    os.makedirs(f"{out}/blobs/sha256", exist_ok=True)

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(f"{out}/blobs/sha256/{d}", "wb") as f:
            f.write(data)
        return "sha256:" + d, len(data)

    descs, diff_ids, tar_bytes = [], [], 0
    for old, new in zip([None] + trees[:-1], trees):
        raw = layer(old, new)
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        d, n = blob(gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        tar_bytes += len(raw)
        print(f"layer {len(descs)}: {len(raw) >> 20} MiB of tar, {n >> 20} MiB gzip", file=sys.stderr)
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["python3"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
    cd, cn = blob(json.dumps(cfg, sort_keys=True).encode())
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
           "layers": descs}
    md, mn = blob(json.dumps(man, sort_keys=True).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": man["mediaType"], "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    with open(f"{out}/index.json", "w") as f:
        json.dump(index, f)
    with open(f"{out}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    entries = len(scan(trees[-1]))
    print(f"image: {len(descs)} layers, {tar_bytes >> 20} MiB of tar, "
          f"{sum(d['size'] for d in descs) >> 20} MiB compressed, {entries} entries in the final tree",
          file=sys.stderr)


if __name__ == "__main__":
    main()
