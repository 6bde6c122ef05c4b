"""Exceptions whose message is the one line a user sees."""


class PipelineError(Exception):
    """A failure with a one-line, user-facing reason (no traceback needed)."""


class ConfigError(PipelineError):
    """The configuration file is missing or invalid."""


class DataError(PipelineError):
    """The input data cannot be used: unreadable, malformed, or failing a critical rule."""
