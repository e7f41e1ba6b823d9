"""Errors that name what is wrong, where, and what to do about it."""

from __future__ import annotations


class SeeThroughError(Exception):
    """Base class of every error this project raises on purpose."""


class LayoutError(SeeThroughError, ValueError):
    """A layout file or object that breaks the schema.

    ``field`` is a dotted path to the offending value, for example ``boxes[2].size``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)
