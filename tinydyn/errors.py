"""User-facing errors: each prints as one line naming the problem and the fix."""


class TinydynError(Exception):
    """A user-facing error: one line naming the problem and the fix."""
