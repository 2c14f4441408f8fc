"""The contest's load tests against the local stack, scored as the contest scores them.

``python -m bench final`` (or ``preview``, ``stress``, ``floor-final`` ...): see
:mod:`bench.cli` for what a run does and writes, :mod:`bench.score` for the
scoring rules, and ``bench/k6/`` for the k6 scripts.
"""
