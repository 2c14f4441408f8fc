"""A valid HTTP function; its manifest entry has a key the runtime does not know."""


class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
