#!/usr/bin/env python3
"""Copies the Docker build context of the repository, as .dockerignore
filters it, into a directory:

  context.py ROOT DEST     -> prints "<files> files, <MB> MB"

No container engine runs where deploy/check.sh runs, so this stands in for
the context a `docker build` would send: check.sh then loads the Cargo
workspace from the copy, which proves the builder stage gets every member
manifest and the lock file. Patterns follow Docker's rules: paths relative
to the root, `*` and `?` within a path element, `**` across elements, a
matched directory excludes everything under it, `!` re-includes, the last
matching pattern wins.
"""
import os
import re
import shutil
import sys


def compile_pattern(p):
    p = p.strip("/")
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif p.startswith("**", i):
            out += ".*"
            i += 2
        elif p[i] == "*":
            out += "[^/]*"
            i += 1
        elif p[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(p[i])
            i += 1
    # A pattern also matches everything below a matched directory.
    return re.compile(f"^{out}(?:/.*)?$")


def rules(root):
    out = []
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return out
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        out.append((neg, compile_pattern(os.path.normpath(line.lstrip("!")))))
    return out


def excluded(rel, rs):
    ex = False
    for neg, rx in rs:
        if rx.match(rel):
            ex = not neg
    return ex


def main():
    root, dest = sys.argv[1], sys.argv[2]
    rs = rules(root)
    n = size = 0
    for d, dirs, files in os.walk(root):
        reld = os.path.relpath(d, root)
        reld = "" if reld == "." else reld + "/"
        # Docker still walks into excluded directories when a later `!`
        # pattern could re-include something; none here does, so prune.
        if not any(neg for neg, _ in rs):
            dirs[:] = [x for x in dirs if not excluded(reld + x, rs)]
        for f in files:
            rel = reld + f
            if excluded(rel, rs):
                continue
            src = os.path.join(d, f)
            dst = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
            n += 1
            size += os.path.getsize(src) if not os.path.islink(src) else 0
    print(f"{n} files, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
