from dataclasses import dataclass


class Hello:
    @dataclass(frozen=True)
    class Settings:
        greeting: str

    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
