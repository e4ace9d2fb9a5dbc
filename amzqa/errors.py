"""Exceptions raised by amzqa, one base class so callers can catch ours only."""


class AmzqaError(Exception):
    """Base class of every error amzqa raises on purpose."""


class ConfigError(AmzqaError, ValueError):
    """A config is contradictory, has unknown keys or values out of range."""


class InputError(AmzqaError):
    """An input file cannot be read at all (missing, a directory, empty, unknown format)."""


class ArtifactError(AmzqaError):
    """An artifact folder is missing, incomplete, corrupt or built for another model or corpus."""


class MissingExtraError(AmzqaError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class GenerationError(AmzqaError):
    """A generator backend failed: a server that is down, slow, erroring or serving another model."""
