class UserError(Exception):
    """Bad input or a state the user can fix; its message is one line, shown without a traceback."""
