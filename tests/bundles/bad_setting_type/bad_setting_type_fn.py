from dataclasses import dataclass
from typing import Annotated

from runtime.schema import Range


class Health:
    @dataclass(frozen=True)
    class Settings:
        cache_s: Annotated[float, Range(0, 60)] = 0.5

    def __init__(self, context):
        self.cache_s = context.settings.cache_s

    def on_get(self, req, resp):
        resp.media = {}
