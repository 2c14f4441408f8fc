class Intake:
    def __init__(self, context):
        self.context = context

    def on_post(self, req, resp):
        pass
