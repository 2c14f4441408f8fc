"""The payment processor emulator: the contest's external processors, on this machine.

``python -m emulator --port 8001 --name default --fee 0.05`` runs one (:mod:`emulator.server`
follows the real processor's API and rules, admin endpoints included);
:mod:`emulator.processors` drives any processor's admin API, the emulator's or a real one's.
"""
