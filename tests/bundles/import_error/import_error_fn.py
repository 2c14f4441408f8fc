"""Imports a dependency that is not installed, as a bundle with a missing requirement would."""

import surely_not_installed_dependency  # noqa: F401


class NeedsDependency:
    def __init__(self, context):
        self.context = context

    def handle(self, message):
        pass
