"""A valid HTTP function; its manifest lists it the wrong way."""


class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
