#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Deterministic (fixed times, owners and order), so running it again gives
the same bytes. The seeds are small valid inputs, and a few hostile ones,
for each parser; the fuzzer mutates from there. See docs/fuzzing.md.
"""

import gzip
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


# ---------------------------------------------------------------- appspec

APPSPEC_MINIMAL = "version: 0.0\nos: linux\n"
APPSPEC_FULL = """version: 0.0
os: linux
files:
  - source: /build/gateway
    destination: /opt/gateway/bin
  - source: config/gateway.toml
    destination: /etc/gateway
  - source: /
    destination: /srv/app/
file_exists_behavior: OVERWRITE
permissions:
  - object: /opt/gateway
    owner: gateway
    group: "1001"
    mode: 0755
    type: [directory]
  - object: /etc/gateway
    pattern: "*.toml"
    except: ["*.local.toml", /etc/gateway/secret]
    mode: "0640"
    acls:
      - u:monitor:r
      - d:g:ops:rwx
    context:
      user: system_u
      type: etc_t
      range: s0
hooks:
  ApplicationStop:
    - location: scripts/stop.sh
      timeout: 60
  BeforeInstall:
    - location: scripts/backup.sh
      timeout: "300"
      runas: gateway
  AfterInstall:
    - location: ./scripts/migrate.sh
    - location: scripts/reload.sh
      timeout: 30
  ValidateService:
    - location: scripts/health.sh
"""
APPSPEC_ANCHORS = """version: 0.0
os: linux
hooks:
  BeforeInstall: &h
    - location: a.sh
      timeout: 10
  AfterInstall: *h
  ApplicationStart: *h
permissions:
  - &p {object: /srv, mode: 4755, owner: "0", type: [file, directory]}
  - <<: *p
    object: /srv/x
"""
APPSPEC_DUPLICATE = "version: 0.0\nos: linux\nos: linux\nfiles: []\n"
APPSPEC_DEEP = "version: 0.0\nos: linux\nfiles: " + "[" * 40 + "]" * 40 + "\n"
APPSPEC_BAD = "version: 0.0\nos: linux\nfiles:\n  - source: ../etc\n    destination: relative\n\tbad: [\n"


def appspecs():
    put("appspec", "hello-app.yml", read("examples/hello-app/appspec.yml"))
    put("appspec", "fleet-app.yml", read("examples/fleet-app/appspec.yml"))
    put("appspec", "minimal.yml", APPSPEC_MINIMAL)
    put("appspec", "full.yml", APPSPEC_FULL)
    put("appspec", "anchors.yml", APPSPEC_ANCHORS)
    put("appspec", "duplicate-key.yml", APPSPEC_DUPLICATE)
    put("appspec", "deep.yml", APPSPEC_DEEP)
    put("appspec", "malformed.yml", APPSPEC_BAD)
    put("appspec", "bom-flow.yml", "\ufeff{version: 0.0, os: linux, hooks: {AfterInstall: [{location: x}]}}\n")


# ---------------------------------------------------------------- config

CONFIG_ALL = """:root_dir: /var/lib/edgedeploy/root
log_dir: /var/log/edgedeploy
max_revisions: "3"
wait_between_runs: 30
proxy_uri: ""
deploy_control_endpoint: https://deploy.example:8443
s3_endpoint_override: http://127.0.0.1:9000
host_identifier: arn:aws:iam::123456789012:user/device-7
aws_access_key_id: AKIDEXAMPLE
aws_secret_access_key: secret
on_premises_config_file: /etc/codedeploy-agent/conf/codedeploy.onpremises.yml
region: eu-west-1
ca_bundle: /etc/ssl/ca.pem
max_bundle_bytes: 0
max_unpacked_bytes: 268435456
max_unpacked_entries: 1000
max_compression_ratio: 0
allow_absolute_paths: false
allow_parent_components: true
allow_external_symlinks: false
allow_special_files: false
allow_setuid: false
script_log_max_bytes: 4096
verbose: true
frobnicate: 1
"""


def configs():
    put("config", "agent.yml", read("examples/agent.yml"))
    put("config", "all-keys.yml", CONFIG_ALL)
    put("config", "empty.yml", "")
    put("config", "not-a-map.yml", "- root_dir\n- /x\n")
    put("config", "bad-value.yml", "max_revisions: 0\nroot_dir: relative\n")


# ---------------------------------------------------------------- bundles

MTIME = 1_600_000_000


def tar_bytes(build, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        build(t)
    data = buf.getvalue().rstrip(b"\0")
    # Keep the end-of-archive marker (two zero blocks), drop the record padding.
    return data + b"\0" * (-len(data) % 512 + 1024)


def add(t, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def app(t, top=""):
    add(t, top + "appspec.yml", data=APPSPEC_MINIMAL.encode())
    add(t, top + "scripts", tarfile.DIRTYPE, mode=0o755)
    add(t, top + "scripts/start.sh", data=b"#!/bin/sh\necho started\n", mode=0o755)
    add(t, top + "app/index.html", data=b"<p>hello</p>\n")


def tars():
    plain = tar_bytes(lambda t: app(t))
    top = tar_bytes(lambda t: (add(t, "release", tarfile.DIRTYPE, mode=0o755), app(t, "release/")))

    def links(t):
        app(t)
        add(t, "current", tarfile.SYMTYPE, link="app")
        add(t, "app/again.html", tarfile.LNKTYPE, link="app/index.html")
        add(t, "up", tarfile.SYMTYPE, link="../etc")
        add(t, "up/passwd", data=b"pwned\n")

    def long_names(t):
        add(t, "d/" + "n" * 150 + "/file", data=b"x")
        add(t, "l", tarfile.SYMTYPE, link="d/" + "n" * 150)

    def odd(t):
        add(t, "../escape", data=b"x")
        add(t, "/abs", data=b"x")
        add(t, "setuid", data=b"x", mode=0o4755)
        add(t, "fifo", tarfile.FIFOTYPE)
        add(t, "dir-then-file", tarfile.DIRTYPE, mode=0o000)
        add(t, "dir-then-file", data=b"x")

    return {
        "app.tar": plain,
        "top-dir.tar": top,
        "links.tar": tar_bytes(links),
        "long-pax.tar": tar_bytes(long_names),
        "long-gnu.tar": tar_bytes(long_names, tarfile.GNU_FORMAT),
        "ustar.tar": tar_bytes(lambda t: app(t), tarfile.USTAR_FORMAT),
        "hostile.tar": tar_bytes(odd, tarfile.GNU_FORMAT),
        "empty.tar": b"\0" * 1024,
    }


def gzip_member(data, name=None, comment=None, extra=None, hcrc=False):
    """A gzip member with the optional header fields of RFC 1952."""
    flags = (2 if hcrc else 0) | (4 if extra else 0) | (8 if name else 0) | (16 if comment else 0)
    head = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", MTIME) + b"\x00\x03"
    if extra:
        head += struct.pack("<H", len(extra)) + extra
    if name:
        head += name + b"\0"
    if comment:
        head += comment + b"\0"
    if hcrc:
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def tgzs(tar_seeds):
    app_tar = tar_seeds["app.tar"]
    out = {
        "app.tgz": gzip_member(app_tar),
        "top-dir.tgz": gzip_member(tar_seeds["top-dir.tar"]),
        "links.tgz": gzip_member(tar_seeds["links.tar"]),
        "header-fields.tgz": gzip_member(app_tar, name=b"app.tar", comment=b"seed", extra=b"AB\x02\x00hi", hcrc=True),
        "two-members.tgz": gzip_member(app_tar[:2048]) + gzip_member(app_tar[2048:]),
        "trailing-garbage.tgz": gzip_member(app_tar) + b"garbage",
    }
    out["python-gzip.tgz"] = gzip.compress(tar_seeds["long-pax.tar"], mtime=MTIME)
    return out


def zip_bytes(build, **kw):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", **kw) as z:
        build(z)
    return buf.getvalue()


def zadd(z, name, data=b"", mode=0o644, kind=0o100000, deflate=True):
    info = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
    info.create_system = 3
    info.external_attr = (kind | mode) << 16
    if name.endswith("/"):
        info.external_attr |= 0x10
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    z.writestr(info, data)


def zapp(z):
    zadd(z, "appspec.yml", APPSPEC_MINIMAL.encode())
    zadd(z, "scripts/", kind=0o040000, mode=0o755)
    zadd(z, "scripts/start.sh", b"#!/bin/sh\necho started\n", mode=0o755, deflate=False)
    zadd(z, "app/index.html", b"<p>hello</p>\n" * 20)


def zips():
    def links(z):
        zapp(z)
        zadd(z, "current", b"app", mode=0o777, kind=0o120000, deflate=False)
        zadd(z, "out", b"../../etc", mode=0o777, kind=0o120000, deflate=False)

    def dos(z):
        info = zipfile.ZipInfo("dos/file.txt", date_time=(2020, 9, 13, 12, 26, 40))
        z.writestr(info, b"made on DOS")

    streamed = io.BytesIO()
    with zipfile.ZipFile(streamed, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open(zipfile.ZipInfo("streamed.txt", date_time=(2020, 9, 13, 12, 26, 40)), "w") as f:
            f.write(b"written with a data descriptor\n" * 8)
    zip64 = io.BytesIO()
    with zipfile.ZipFile(zip64, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open(zipfile.ZipInfo("big.txt", date_time=(2020, 9, 13, 12, 26, 40)), "w", force_zip64=True) as f:
            f.write(b"zip64 sizes\n")
    return {
        "app.zip": zip_bytes(zapp),
        "links.zip": zip_bytes(links),
        "dos.zip": zip_bytes(dos),
        "data-descriptor.zip": streamed.getvalue(),
        "zip64.zip": zip64.getvalue(),
        "empty.zip": zip_bytes(lambda z: None),
    }


# ---------------------------------------------------------------- spec and command answers


def spec(revision, **extra):
    doc = {
        "DeploymentId": "d-ABCDEF123",
        "DeploymentGroupId": "dg-0001",
        "DeploymentGroupName": "fleet",
        "ApplicationName": "gateway",
        "DeploymentCreator": "user",
        "DeploymentType": "IN_PLACE",
        "AppSpecFilename": "appspec.yml",
        "Revision": revision,
        "AllPossibleLifecycleEvents": ["ApplicationStop", "DownloadBundle", "Install", "ValidateService"],
    }
    doc.update(extra)
    return doc


S3 = {"RevisionType": "S3", "S3Revision": {"Bucket": "b", "Key": "k/app.tgz", "BundleType": "tgz",
                                            "Version": "v1", "ETag": "\"e\"", "Sha256": "0" * 64}}
GITHUB = {"RevisionType": "GitHub", "GitHubRevision": {"Account": "acme", "Repository": "gw", "CommitId": "c0ffee",
                                                        "Archive": {"Bucket": "b", "Key": "k", "BundleType": "zip"}}}
URL = {"RevisionType": "URL", "UrlRevision": {"Url": "https://example.invalid/app.tar", "Sha256": "a" * 64,
                                               "BundleType": "tar"}}


def specs():
    put("spec", "s3.json", json.dumps(spec(S3, AgentActionOverrides={"AgentOverrides": {"FileExistsBehavior": "RETAIN"}})))
    put("spec", "github.json", json.dumps(spec(GITHUB)))
    put("spec", "url.json", json.dumps(spec(URL)))
    put("spec", "bad-id.json", json.dumps(spec(S3, DeploymentId="../../etc")))


def commands():
    host_command = {"HostCommandIdentifier": "hc-1", "HostIdentifier": "arn:aws:iam::1:user/dev",
                    "DeploymentExecutionId": "de-1", "CommandName": "BeforeInstall", "Nonce": 7}
    put("command", "poll.json", json.dumps({"HostCommand": host_command}))
    put("command", "poll-empty.json", "{}")
    put("command", "poll-long-id.json", json.dumps({"HostCommand": dict(host_command, HostCommandIdentifier="a/b+" * 40)}))
    put("command", "ack.json", json.dumps({"CommandStatus": "InProgress"}))
    envelope = {"GenericEnvelope": {"Format": "TEXT/JSON", "Payload": json.dumps(spec(S3))}}
    put("command", "spec.json", json.dumps({"DeploymentSystem": "CodeDeploy", "DeploymentSpecification": envelope}))
    put("command", "error.json", json.dumps({"__type": "com.amazon#ThrottlingException", "message": "slow down"}))
    put("command", "error.xml", "<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
    put("command", "blank.txt", " \n")


def sigv4():
    # Lines: Authorization, X-Amz-Date, method, path, query, headers.
    auth = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/codedeploy-commands/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
            "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    put("sigv4", "json-api.txt", "\n".join([
        auth, "20150830T123600Z", "POST", "/", "",
        "content-type: application/x-amz-json-1.1", "host: 127.0.0.1:8443",
        "x-amz-target: CodeDeployCommandService_v20141006.PollHostCommand"]))
    put("sigv4", "s3-get.txt", "\n".join([
        auth.replace("codedeploy-commands", "s3"), "20150830T123600Z", "GET", "/bucket/my%20key.tgz",
        "versionId=3&x-id=GetObject&empty=", "host: 127.0.0.1:9000",
        "x-amz-content-sha256: UNSIGNED-PAYLOAD", "range: bytes=0-99"]))
    # Found by the fuzzer: a sign inside a percent escape (now refused).
    put("sigv4", "signed-escape.txt", "Aa\n1006+830T123600Z\n\n%+c1")
    put("sigv4", "malformed.txt", "\n".join(["AWS4-HMAC-SHA256 Credential=/,SignedHeaders=,Signature=zz",
                                            "2015+830T123600Z", "", "%zz", "%%=&=", "host:"]))


def main():
    appspecs()
    configs()
    tar_seeds = tars()
    for name, data in tar_seeds.items():
        put("tar", name, data)
    for name, data in tgzs(tar_seeds).items():
        put("tgz", name, data)
    for name, data in zips().items():
        put("zip", name, data)
    specs()
    commands()
    sigv4()


if __name__ == "__main__":
    main()
