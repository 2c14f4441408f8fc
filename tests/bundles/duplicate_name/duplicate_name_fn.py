"""A valid HTTP function, declared twice under one name by the manifest."""


class Things:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = []
