"""A bundle that loads: one function of each kind."""


class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {"greeting": self.context.settings["greeting"]}

    def on_post(self, req, resp):
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
