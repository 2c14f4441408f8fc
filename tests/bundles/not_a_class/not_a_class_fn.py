"""A plain function where the runtime expects a class taking the function context."""


def hello(req, resp):
    resp.media = {}
