#!/usr/bin/env python3
"""Writes a FROM-scratch OCI image of one static binary, without a container
engine (scripts/build-bridge-image.sh; the image deploy/bridge/Dockerfile
describes).

    oci_image.py --bin FILE --out DIR --name localhost/sitewatch-bridge --tag 0.1.0
                 [--arch amd64] [--ca-bundle FILE] [--created UNIX] [--revision R]

DIR/layout/ is an OCI image layout (oci-layout, index.json, blobs/sha256/),
DIR/NAME-TAG.oci.tar the same as one archive that `docker load` (25+),
`podman load` and `skopeo copy oci-archive:` read. Reproducible: the same
inputs and --created give the same bytes (sorted entries, fixed times and
owners, gzip without a timestamp). `--check DIR/layout` verifies a layout:
every digest and size, and prints the config as JSON.
"""
import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

ENTRYPOINT = ["/sitewatch-bridge"]
CMD = ["--config", "/etc/sitewatch/bridge.toml"]
USER = "65532:65532"
PORT = "9187/tcp"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries, mtime):
    """entries: (path, mode, bytes or None for a directory), sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, mode, data in sorted(entries):
            info = tarfile.TarInfo(path)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(data)
    return out.getvalue()


def blob(layout, data):
    d = sha(data)
    path = os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": d, "size": len(data)}


def build(a):
    with open(a.bin, "rb") as f:
        binary = f.read()
    entries = [
        ("etc", 0o755, None),
        ("etc/sitewatch", 0o755, None),
        ("sitewatch-bridge", 0o755, binary),
    ]
    env = []
    if a.ca_bundle:
        with open(a.ca_bundle, "rb") as f:
            entries += [
                ("etc/ssl", 0o755, None),
                ("etc/ssl/certs", 0o755, None),
                ("etc/ssl/certs/ca-certificates.crt", 0o644, f.read()),
            ]
        env.append("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
    layer_tar = tar_bytes(entries, a.created)
    layer_gz = gz(layer_tar)

    layout = os.path.join(a.out, "layout")
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layer = blob(layout, layer_gz)
    created = datetime.datetime.fromtimestamp(a.created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "sitewatch-bridge",
        "org.opencontainers.image.description": "sitewatch central bridge: MQTT -> PostgreSQL and Loki",
        "org.opencontainers.image.version": a.tag,
        "org.opencontainers.image.revision": a.revision,
        "org.opencontainers.image.created": created,
    }
    config = {
        "created": created,
        "architecture": a.arch,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ENTRYPOINT,
            "Cmd": CMD,
            "Env": env,
            "ExposedPorts": {PORT: {}},
            "StopSignal": "SIGTERM",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
        "history": [{"created": created, "created_by": "scripts/build-bridge-image.sh (scripts/lib/oci_image.py)"}],
    }
    cfg = blob(layout, json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cfg),
        "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **layer)],
        "annotations": labels,
    }
    man = blob(layout, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            dict(
                mediaType="application/vnd.oci.image.manifest.v1+json",
                platform={"architecture": a.arch, "os": "linux"},
                annotations={
                    # docker load names the image from these.
                    "io.containerd.image.name": f"{a.name}:{a.tag}",
                    "org.opencontainers.image.ref.name": a.tag,
                },
                **man,
            )
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True, separators=(",", ":"))

    # The same layout as one archive.
    files = []
    for root, dirs, names in os.walk(layout):
        for d in dirs:
            files.append((os.path.relpath(os.path.join(root, d), layout), 0o755, None))
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                files.append((os.path.relpath(p, layout), 0o644, f.read()))
    archive = os.path.join(a.out, f"{os.path.basename(a.name)}-{a.tag}-{a.arch}.oci.tar")
    with open(archive, "wb") as f:
        f.write(tar_bytes(files, a.created))
    print(json.dumps({
        "layout": layout,
        "archive": archive,
        "manifest": man["digest"],
        "layer_bytes": layer["size"],
        "uncompressed_bytes": len(layer_tar),
        "archive_bytes": os.path.getsize(archive),
    }))


def check(layout):
    """Every blob's digest and size as referenced; returns the config."""
    def load(desc):
        p = os.path.join(layout, "blobs", *desc["digest"].split(":", 1))
        with open(p, "rb") as f:
            data = f.read()
        assert sha(data) == desc["digest"], f"{p}: digest mismatch"
        assert len(data) == desc["size"], f"{p}: size mismatch"
        return data

    with open(os.path.join(layout, "oci-layout")) as f:
        assert json.load(f)["imageLayoutVersion"] == "1.0.0"
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    assert len(index["manifests"]) == 1, "one image"
    man = json.loads(load(index["manifests"][0]))
    config = json.loads(load(man["config"]))
    assert len(man["layers"]) == len(config["rootfs"]["diff_ids"])
    for desc, diff in zip(man["layers"], config["rootfs"]["diff_ids"]):
        assert sha(gzip.decompress(load(desc))) == diff, "layer diff_id mismatch"
    return {"index": index, "manifest": man, "config": config}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin")
    p.add_argument("--out")
    p.add_argument("--name", default="localhost/sitewatch-bridge")
    p.add_argument("--tag")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--ca-bundle")
    p.add_argument("--created", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    p.add_argument("--revision", default="unknown")
    p.add_argument("--check", metavar="LAYOUT")
    a = p.parse_args()
    if a.check:
        print(json.dumps(check(a.check), sort_keys=True))
        return
    if not (a.bin and a.out and a.tag):
        p.error("--bin, --out and --tag are needed")
    build(a)


if __name__ == "__main__":
    sys.exit(main())
