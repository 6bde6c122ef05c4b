"""Exceptions whose message is the one line a user sees, and the bounds that keep it one line."""

from __future__ import annotations

from typing import Any

# An error line is read by a person and stored in Prefect states, artifacts and logs: a file's
# content (a 40 MB cell, 10,000 column names) must never make it long.
MAX_MESSAGE_CHARS = 400
MAX_CELL_CHARS = 40


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with a visible marker."""
    flat = " ".join(text[: limit * 2].split())  # cut before splitting: the input may be huge
    return flat if len(flat) <= limit and len(text) <= limit * 2 else flat[: limit - 15] + " ...(truncated)"


def cell(value: Any, limit: int = MAX_CELL_CHARS) -> str:
    """A cell's value quoted for a message, cut to ``limit`` characters."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


class PipelineError(Exception):
    """A failure with a one-line, user-facing reason (no traceback needed), bounded in length."""

    def __init__(self, message: object = "") -> None:
        super().__init__(shorten(str(message)))


class ConfigError(PipelineError):
    """The configuration file is missing or invalid."""


class DataError(PipelineError):
    """The input data cannot be used: unreadable, malformed, or failing a critical rule."""
