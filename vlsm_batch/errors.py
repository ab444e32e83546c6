"""Exceptions that carry a message a user can act on (the CLI prints them as is, exit code 2)."""

from __future__ import annotations


class VlsmBatchError(Exception):
    """Base class: any error whose message is meant for the user, not a traceback."""


class SpecError(VlsmBatchError):
    """A study file is invalid; ``errors`` holds one line per problem (``file:line:col: path: message``)."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class UnknownNameError(VlsmBatchError, KeyError):
    """A registry lookup failed; the message lists close matches and the valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SubmissionError(VlsmBatchError):
    """Submission refused before anything was launched."""


class StudyNotFoundError(VlsmBatchError):
    """No study folder where one was expected."""
