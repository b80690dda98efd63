#!/usr/bin/env python3
"""Generate the two test revisions (A and B) of the device tests.

    gen-revisions.py OUTDIR [--files N] [--bytes TOTAL] [--seed S] [--names A,B]

Writes OUTDIR/bundles/{A,B}.tgz (or the two --names), OUTDIR/manifests/{A,B}.sha256 ("<sha256>
./<path>" per installed file, relative to the destination) and
OUTDIR/revisions.txt ("<rev> <sha256 of bundle> bundles/<rev>.tgz").

Both revisions install app/ into /data/app/edgeapp. They share the
layout but differ: most common paths have different content, some are
identical, and each revision has files and directories of its own, so
that switching revisions replaces, keeps, adds and removes files and
directories. Content is pseudo-random (incompressible), deterministic for
a seed. The hooks start a busybox shell loop writing a heartbeat to
/var/run/edgeapp/heartbeat and take a little time each.
"""
import argparse
import hashlib
import io
import os
import random
import tarfile

DEST = "/data/app/edgeapp"

APPSPEC = """version: 0.0
os: linux
files:
  - source: app/
    destination: {dest}
permissions:
  - object: {dest}
    pattern: "edgeapp.sh"
    mode: 755
    type:
      - file
hooks:
  ApplicationStop:
    - location: scripts/application_stop.sh
      timeout: 60
  BeforeInstall:
    - location: scripts/before_install.sh
      timeout: 60
  AfterInstall:
    - location: scripts/after_install.sh
      timeout: 60
  ApplicationStart:
    - location: scripts/application_start.sh
      timeout: 60
  ValidateService:
    - location: scripts/validate_service.sh
      timeout: 60
"""

APP = r"""#!/bin/sh
# edgeapp: writes a heartbeat "<epoch> <count> <revision>" twice a second.
RUN=/var/run/edgeapp
REV=$(cat "$(dirname "$0")/VERSION")
mkdir -p "$RUN"
echo $$ >"$RUN/app.pid"
trap 'rm -f "$RUN/app.pid"; exit 0' TERM INT
n=0
while :; do
    n=$((n + 1))
    echo "$(date +%s) $n $REV" >"$RUN/heartbeat.tmp"
    mv -f "$RUN/heartbeat.tmp" "$RUN/heartbeat"
    sleep 0.5
done
"""

STOP = r"""#!/bin/sh
# ApplicationStop: stop edgeapp (from the previous revision).
RUN=/var/run/edgeapp
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID: stopping edgeapp"
[ -s "$RUN/app.pid" ] || { echo "not running"; exit 0; }
pid=$(cat "$RUN/app.pid")
kill "$pid" 2>/dev/null || { rm -f "$RUN/app.pid"; exit 0; }
i=0
while [ -e "$RUN/app.pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
kill -9 "$pid" 2>/dev/null
rm -f "$RUN/app.pid"
echo "stopped"
"""

BEFORE = r"""#!/bin/sh
# BeforeInstall: prepare the runtime directory; takes a moment.
set -e
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID ($APPLICATION_NAME, $DEPLOYMENT_GROUP_NAME)"
mkdir -p /var/run/edgeapp
sleep 0.5
"""

AFTER = r"""#!/bin/sh
# AfterInstall: every file of the revision is in place; takes a moment.
set -e
want={nfiles}
have=$(find {dest} -type f | wc -l)
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID: $have files installed (revision has $want)"
[ "$have" -eq "$want" ] || {{ echo "file count mismatch"; exit 1; }}
[ -x {dest}/edgeapp.sh ] || {{ echo "edgeapp.sh not executable"; exit 1; }}
sleep 0.5
"""

START = r"""#!/bin/sh
# ApplicationStart: start edgeapp detached (own session), wait for its pidfile.
RUN=/var/run/edgeapp
mkdir -p "$RUN"
rm -f "$RUN/app.pid" "$RUN/heartbeat"
setsid {dest}/edgeapp.sh </dev/null >>"$RUN/edgeapp.log" 2>&1 &
i=0
while [ ! -s "$RUN/app.pid" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && {{ echo "edgeapp did not start"; exit 1; }}
    sleep 0.1
done
echo "edgeapp started, pid $(cat "$RUN/app.pid")"
"""

VALIDATE = r"""#!/bin/sh
# ValidateService: the heartbeat advances and names this revision.
RUN=/var/run/edgeapp
want=$(cat {dest}/VERSION)
beat() {{ cut -d ' ' -f 2 "$RUN/heartbeat" 2>/dev/null || echo 0; }}
first=$(beat)
i=0
while [ "$(beat)" -le "${{first:-0}}" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && {{ echo "heartbeat does not advance"; exit 1; }}
    sleep 0.1
done
rev=$(cut -d ' ' -f 3 "$RUN/heartbeat")
[ "$rev" = "$want" ] || {{ echo "heartbeat from revision $rev, expected $want"; exit 1; }}
echo "heartbeat $(cat "$RUN/heartbeat")"
"""


def layout(rng, nfiles, total):
    """Common paths, then per-revision decisions."""
    ndirs = max(4, nfiles // 16)
    dirs = [f"data/d{d:02d}" + (f"/sub{d % 3}" if d % 4 == 0 else "") for d in range(ndirs)]
    mean = total / nfiles
    files = []
    for i in range(nfiles):
        size = max(1, int(rng.expovariate(1 / mean)))
        size = min(size, int(mean * 8))
        files.append((f"{rng.choice(dirs)}/f{i:04d}.bin", size))
    return files


def build(out, rev, entries, nfiles_total):
    """entries: list of (relpath under app/, bytes, mode)."""
    manifest = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6, format=tarfile.GNU_FORMAT) as tar:
        seen_dirs = set()

        def add_dir(path):
            if path in seen_dirs or path in ("", "."):
                return
            parent = os.path.dirname(path)
            if parent:
                add_dir(parent)
            seen_dirs.add(path)
            ti = tarfile.TarInfo(path)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = 1700000000
            tar.addfile(ti)

        def add_file(path, data, mode):
            add_dir(os.path.dirname(path))
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = 1700000000
            tar.addfile(ti, io.BytesIO(data))

        add_file("appspec.yml", APPSPEC.format(dest=DEST).encode(), 0o644)
        scripts = {
            "application_stop.sh": STOP,
            "before_install.sh": BEFORE,
            "after_install.sh": AFTER.format(dest=DEST, nfiles=nfiles_total),
            "application_start.sh": START.format(dest=DEST),
            "validate_service.sh": VALIDATE.format(dest=DEST),
        }
        for name, text in scripts.items():
            add_file(f"scripts/{name}", text.encode(), 0o755)
        for rel, data, mode in sorted(entries):
            add_file(f"app/{rel}", data, mode)
            manifest.append(f"{hashlib.sha256(data).hexdigest()}  ./{rel}\n")
    bundle = buf.getvalue()
    os.makedirs(f"{out}/bundles", exist_ok=True)
    os.makedirs(f"{out}/manifests", exist_ok=True)
    with open(f"{out}/bundles/{rev}.tgz", "wb") as f:
        f.write(bundle)
    with open(f"{out}/manifests/{rev}.sha256", "w") as f:
        f.writelines(manifest)
    return hashlib.sha256(bundle).hexdigest(), len(bundle), len(manifest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--bytes", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--names", default="A,B", help="the two revisions' names (also their VERSION)")
    a = ap.parse_args()
    first, second = a.names.split(",")
    rng = random.Random(a.seed)
    common = layout(rng, a.files, a.bytes)
    revs = {first: [], second: []}
    for i, (path, size) in enumerate(common):
        kind = i % 20
        if kind < 14:  # same path, different content
            for rev in revs:
                revs[rev].append((path, rng.randbytes(size), 0o644))
        elif kind < 17:  # identical in both
            data = rng.randbytes(size)
            for rev in revs:
                revs[rev].append((path, data, 0o644))
        else:  # only in one revision (A or B), in a directory of its own
            rev = first if kind % 2 else second
            revs[rev].append((f"only-{rev.lower()}/{os.path.basename(path)}", rng.randbytes(size), 0o644))
    lines = []
    for rev, entries in revs.items():
        entries.append(("edgeapp.sh", APP.encode(), 0o644))  # mode 755 from the AppSpec
        entries.append(("VERSION", f"{rev}\n".encode(), 0o644))
        sha, size, n = build(a.out, rev, entries, len(entries))
        lines.append(f"{rev} {sha} bundles/{rev}.tgz\n")
        print(f"revision {rev}: {n} files, bundle {size} bytes, sha256 {sha[:16]}")
    with open(f"{a.out}/revisions.txt", "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
