"""The contest's load tests against the local stack, scored as the contest scores them.

``python -m stack.bench final`` (or ``preview``, ``stress``, ``floor-final`` ...): see
:mod:`stack.bench.cli` for what a run does and writes, :mod:`stack.bench.score` for the
scoring rules, and ``stack/bench/k6/`` for the k6 scripts.
"""
