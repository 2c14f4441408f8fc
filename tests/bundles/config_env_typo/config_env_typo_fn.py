from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upstream:
    url: str = "http://127.0.0.1:9000"


@dataclass(frozen=True)
class ShopConfig:
    upstream: Upstream = field(default_factory=Upstream)


class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
