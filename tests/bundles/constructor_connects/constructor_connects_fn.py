class Report:
    def __init__(self, context):
        self.count = context.deps.database.run("SELECT count(*) FROM jobs")

    def on_get(self, req, resp):
        resp.media = {"count": self.count}
