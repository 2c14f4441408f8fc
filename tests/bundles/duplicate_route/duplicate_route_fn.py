"""A valid HTTP function, declared twice on one route by the manifest."""


class Things:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = []

    def on_post(self, req, resp):
        resp.media = {}
