class UserError(Exception):
    """A mistake in what the user asked for: shown as one sentence, no traceback."""


def reason(exc: BaseException) -> str:
    """The first line of what an exception says (its OS error text where it has one), for a status row."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
