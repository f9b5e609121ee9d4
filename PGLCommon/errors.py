"""The one error type both PGL modules raise for a user's mistake (a bad selection, file, folder or model).

A panel shows its message as it is, in the panel and in a dialog, never as a traceback; the message names the
node, file or folder and says what to do.
"""
from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; the message names what is wrong and what to do."""
