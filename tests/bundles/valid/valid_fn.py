"""A bundle that loads: one function of each kind, and a queue between two of them."""

from dataclasses import dataclass


class Hello:
    @dataclass(frozen=True)
    class Settings:
        greeting: str = "hello"

    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {"greeting": self.context.settings.greeting}

    def on_post(self, req, resp):
        self.context.producer().put(req.media)
        resp.media = {}


class Worker:
    def __init__(self, context):
        self.context = context

    def handle(self, message):
        pass


class Tick:
    def __init__(self, context):
        self.context = context

    def run(self):
        pass
