"""User-facing errors: each message is one line that names the fix. The CLI prints it and exits 2."""  # noqa: E501


class UserError(ValueError):
    """Bad input from the user (config, command line, data, workdir); nothing has been written."""
