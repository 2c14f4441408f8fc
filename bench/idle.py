"""What a running local stack spends doing nothing: each service's CPU over a quiet spell.

    python -m bench.idle [--seconds 30]

Reads each service's cgroup (``make up`` under the compose limits) before and after, and
prints milliseconds of CPU a second per service and in all. Under load this cost is paid on
top of every payment's own work, so timers that wake for nothing show up here first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from stack.cgroups import stack_usage
from stack.settings import StackSettings


def main(argv: list[str] | None = None) -> int:
    """Print the stack's idle CPU per service; exit 1 if no limited stack is running."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to watch")
    args = parser.parse_args(argv)
    settings = StackSettings.from_env(os.environ)
    before = stack_usage(settings.pids_dir)
    if not before:
        print("idle: no stack under cgroup limits is running (make up)", file=sys.stderr)
        return 1
    time.sleep(args.seconds)
    after = stack_usage(settings.pids_dir)
    total = 0.0
    for name, used in after.items():
        earlier = before.get(name)
        cpu_s = used.since(earlier).cpu_s if earlier is not None else None
        if cpu_s is None:
            continue
        ms_a_second = cpu_s * 1000 / args.seconds
        total += ms_a_second
        print(f"{name:12}{ms_a_second:8.2f} ms of CPU a second")
    print(f"{'in all':12}{total:8.2f} ms of CPU a second over {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
