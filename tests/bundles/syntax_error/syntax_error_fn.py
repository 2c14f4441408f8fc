"""Does not parse: the closing parenthesis is missing on line 5."""


class Broken:
    def __init__(self, context:
        self.context = context
