"""One exception family for every failure a user causes, so every tool reports it the same way.

A `UserError` is raised where the bad input enters (a config key, a dataset file, a run directory, a
checkpoint or ticket file, a partition too small to train); its message names the key or file and the fix.
The tools print it as one `Error: ...` line and exit non-zero, without a traceback (`colt_core.cli`).
Anything else that escapes is a bug, and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message names what is wrong and how to fix it."""


class TrainingDivergedError(UserError, FloatingPointError):
    """A training loss or validation loss became NaN or infinite: the learning rate is too high for the model."""
