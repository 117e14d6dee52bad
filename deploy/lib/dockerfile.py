#!/usr/bin/env python3
"""Pulls one RUN instruction out of the Dockerfile, for deploy/lib/runtime-dryrun.sh:

  dockerfile.py app-run DOCKERFILE   -> bash to eval: the ARG defaults of
                                       the runtime stage (unless already in
                                       the environment), exported, and
                                       APP_RUN_SCRIPT, the RUN that
                                       assembles the app (the one that
                                       bind-mounts the `app` context)

Only what that dry run needs: continuation lines joined, `--mount=` flags
removed, ARG defaults unquoted as the Dockerfile frontend does.
"""
import re
import shlex
import sys


def instructions(text):
    """(keyword, arguments) per instruction, comments dropped, `\\` joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + "\n"
            continue
        cur += line
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        cur = ""
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "app-run":
        raise SystemExit(__doc__)
    ins = instructions(open(sys.argv[2], encoding="utf-8").read())
    stage, args, script = None, {}, None
    for kw, rest in ins:
        if kw == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stage = m.group(1) if m else None
            args = {}
        elif kw == "ARG" and stage == "runtime":
            name, eq, value = rest.partition("=")
            args[name.strip()] = " ".join(shlex.split(value)) if eq else ""
        elif kw == "RUN" and stage == "runtime" and "from=app" in rest:
            body = rest
            while body.startswith("--"):
                flag, _, body = body.partition(" ")
                body = body.lstrip()
            script = body
    if script is None:
        raise SystemExit("no RUN --mount=type=bind,from=app in the runtime stage")
    for k, v in args.items():
        print(f'[ -n "${{{k}+x}}" ] || {k}={shlex.quote(v)}; export {k}')
    print("APP_RUN_SCRIPT=" + shlex.quote(script))


if __name__ == "__main__":
    main()
