"""Classes that exist but do not have the shape their kind requires."""


class PostOnly:
    """Declared for GET in ``no_on_get.yaml`` but answers POST only."""

    def __init__(self, context):
        self.context = context

    def on_post(self, req, resp):
        resp.media = {}


class NoHandle:
    """Declared as a background function but has no ``handle``."""

    def __init__(self, context):
        self.context = context

    def process(self, item):
        pass


class TwoArguments:
    """Has ``on_get`` but wants two constructor arguments instead of the context alone."""

    def __init__(self, context, database):
        self.context = context
        self.database = database

    def on_get(self, req, resp):
        resp.media = {}
