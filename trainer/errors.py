"""User-facing errors.

Anything a user can cause (a bad name, a short corpus, a broken checkpoint) raises ``OLHError`` with
one clear sentence. Entry points catch it and print ``error: <message>`` without a traceback."""


class OLHError(Exception):
    """An error caused by user input; its message is shown as-is, on one line."""


class DataError(OLHError):
    """Bad or missing data: corpus not found, too short, malformed rows."""


class CheckpointError(OLHError):
    """Missing, incomplete or corrupt checkpoint directory."""
