"""The garbage collector in long-running, forked processes.

A full collection walks every tracked object: an HTTP instance holds about 40,000 once Falcon,
the functions and their clients are loaded, and walking them took 15 ms on this project's
2-core machine, a stall for whatever request waits meanwhile. Frozen objects are never walked
again. Walking is also writing (each object's collector header), and a child forked from the
supervisor shares the supervisor's pages until it writes to them: one full collection in a
child would copy every page it inherited (the HTTP container measured 25 MB more, past its
45 MB limit). So the supervisor freezes before it forks, and each child freezes what it built
without collecting first.
"""

from __future__ import annotations

import gc


def freeze_before_fork() -> None:
    """In the supervisor, right before forking its children: collect, then freeze."""
    gc.collect()
    gc.freeze()


def freeze_startup_objects() -> None:
    """In a child, once its functions are built, just before it serves: freeze, no collection."""
    gc.freeze()
