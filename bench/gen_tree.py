#!/usr/bin/env python3
"""The benchmarks' bundle content: NFILES files (10 KiB on average, 60 %
incompressible, 40 % text) in NDIRS directories under ROOT/data, plus a
trivial hook script per lifecycle event under ROOT/scripts. Deterministic
(fixed seed), so every run and both benchmarks deploy the same tree.

    gen_tree.py ROOT NDIRS NFILES
    gen_tree.py --appspec ROOT DEST     writes ROOT/appspec.yml installing ROOT into DEST
"""
import os, random, sys

APPSPEC = """version: 0.0
os: linux
files:
  - source: /
    destination: {dest}
hooks:
  ApplicationStop:
    - location: scripts/application_stop.sh
  BeforeInstall:
    - location: scripts/before_install.sh
  AfterInstall:
    - location: scripts/after_install.sh
  ApplicationStart:
    - location: scripts/application_start.sh
  ValidateService:
    - location: scripts/validate_service.sh
"""

if sys.argv[1] == "--appspec":
    with open(os.path.join(sys.argv[2], "appspec.yml"), "w") as fh:
        fh.write(APPSPEC.format(dest=sys.argv[3]))
    sys.exit(0)

root, ndirs, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(20240601)
letters = "abcdefghijklmnopqrstuvwxyz"
words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(2000)]
for d in range(ndirs):
    sub = os.path.join(root, "data", f"d{d:02d}")
    os.makedirs(sub)
    for f in range(nfiles // ndirs):
        size = rng.randint(6 * 1024, 14 * 1024)  # 10 KiB on average
        if rng.random() < 0.6:  # binary-like: incompressible
            name, data = f"f{f:03d}.bin", rng.randbytes(size)
        else:  # text-like: lines of words
            out, n = [], 0
            while n < size:
                line = " ".join(rng.choices(words, k=rng.randint(4, 16))) + "\n"
                out.append(line)
                n += len(line)
            name, data = f"f{f:03d}.txt", "".join(out).encode()[:size]
        with open(os.path.join(sub, name), "wb") as fh:
            fh.write(data)

scripts = os.path.join(root, "scripts")
os.makedirs(scripts, exist_ok=True)
for hook in ("application_stop", "before_install", "after_install", "application_start", "validate_service"):
    path = os.path.join(scripts, f"{hook}.sh")
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o755)
