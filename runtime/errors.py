"""Start-up failures of the runtime, each a named fault with a message that says what to fix."""


class RuntimeStartError(Exception):
    """Base of every error that stops the runtime from starting; exits with status 2."""


class ConfigError(RuntimeStartError):
    """A config value is missing, of the wrong type or out of range."""


class ManifestError(RuntimeStartError):
    """``functions.yaml`` is malformed: unknown keys, wrong types, duplicate routes."""


class HandlerNotFound(ManifestError):
    """The file or the name a handler reference points at does not exist."""


class UserCodeSyntaxError(ManifestError):
    """A function file does not parse."""


class ImportModuleError(ManifestError):
    """A function file raised while it was imported (a missing dependency, say)."""


class HandlerShapeError(ManifestError):
    """A handler exists but does not have the methods its kind requires."""


class SettingsError(ManifestError):
    """A function's settings do not fit its ``Settings`` dataclass (or it declares none)."""


class QueueWiringError(ManifestError):
    """A queue is not declared, or is put to with nobody consuming it (or the reverse)."""


class FunctionInitError(RuntimeStartError):
    """A function's constructor raised: it would fail in every process that serves it."""


class InstanceInUse(RuntimeStartError):
    """Another process already writes the queue journals of this instance name."""
