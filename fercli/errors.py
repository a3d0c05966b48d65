class UserError(Exception):
    """A mistake in what the user asked for: shown as one sentence, no traceback."""
