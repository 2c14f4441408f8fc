class Report:
    def __init__(self, context):
        self.columns = context.settings["columns"]  # no Settings declared: settings is None

    def on_get(self, req, resp):
        resp.media = {"columns": self.columns}
