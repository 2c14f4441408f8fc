class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
