"""``python -m stack.cgexec [--join DIR]... [--user NAME] [--chdir DIR] -- ARGV...``.

Joins the given cgroup folders (writing its own pid to each ``cgroup.procs``), drops to
``--user`` if asked, moves to ``--chdir`` (a checkout the user cannot enter makes PostgreSQL
complain), then replaces itself with ``ARGV``. Joining before the exec means the
service and everything it forks are limited from their first instruction; dropping privileges
here rather than in ``subprocess`` keeps the cgroup write (root only) before the switch.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys


def main(argv: list[str] | None = None) -> int:
    """Join, drop, exec; returns only on an error (exit status 126)."""
    parser = argparse.ArgumentParser(prog="python -m stack.cgexec", description=__doc__)
    parser.add_argument("--join", action="append", default=[], metavar="DIR")
    parser.add_argument("--user", metavar="NAME")
    parser.add_argument("--chdir", metavar="DIR")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("nothing to run: put the command after --")
    try:
        for folder in args.join:
            with open(os.path.join(folder, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        if args.user:
            _become(args.user)
        if args.chdir:
            os.chdir(args.chdir)
        os.execvp(command[0], command)
    except (OSError, KeyError) as exc:
        print(f"stack.cgexec: cannot run {command[0]}: {exc}", file=sys.stderr)
    return 126


def _become(user: str) -> None:
    """Switch to ``user`` for good: groups first, then gid, then uid."""
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user


if __name__ == "__main__":
    sys.exit(main())
