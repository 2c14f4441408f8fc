from dataclasses import dataclass


@dataclass(frozen=True)
class ShopConfig:
    server: str = "shop.example"  # the runtime's own section is called server


class Hello:
    def __init__(self, context):
        self.context = context

    def on_get(self, req, resp):
        resp.media = {}
