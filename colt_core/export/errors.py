"""The export layer's error: what the user asked to export cannot be exported, and how to fix the request."""

from __future__ import annotations

from colt_core.errors import UserError


class ExportError(UserError, ValueError):
    """A run directory, round or model cannot be exported as asked."""
