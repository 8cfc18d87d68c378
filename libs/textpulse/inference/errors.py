"""Errors of the inference client, split by what the caller must do about them.

- :class:`ModelMismatch`: configuration is wrong (missing model, wrong tensors,
  label count differs) — raised at start-up so the service never runs half-wired.
- :class:`BackendUnavailable`: transient (server down, timeout, circuit open) —
  the caller retries later and must not commit its input.
- :class:`InputRejected`: this input cannot be processed (poison) — the caller
  isolates the offending record and dead-letters it.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of inference client errors."""


class ModelMismatch(InferenceError):
    """The server's model does not match what the service expects (fail fast at start-up)."""


class BackendUnavailable(InferenceError):
    """Transient failure: retry later, do not commit the input."""

    #: Not the records' fault: ``DeadLetters.guard`` never counts it towards ``retries exhausted``.
    transient = True


class InputRejected(InferenceError):
    """The backend refused this input (e.g. invalid argument): dead-letter it."""
