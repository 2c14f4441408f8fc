class Worker:
    def __init__(self, context):
        self.context = context

    def handle(self, message):
        pass
