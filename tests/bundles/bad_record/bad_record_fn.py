class Job:
    """Writes its records but cannot read them back."""

    def __init__(self, name):
        self.name = name

    def encode(self):
        return self.name.encode()


class Intake:
    def __init__(self, context):
        self.context = context

    def on_post(self, req, resp):
        pass


class Worker:
    def __init__(self, context):
        self.context = context

    def handle(self, message):
        pass
