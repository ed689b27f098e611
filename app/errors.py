"""The errors a front end shows to a person, each with its CLI exit code.

Every message is one sentence a person can act on; front ends print it (CLI)
or show it in a banner (GUI) and never a traceback.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PERMISSION = 3


class ConsoleError(Exception):
    """Base of every error meant for the operator."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ConsoleError):
    """The configuration file or a command line argument is wrong."""

    exit_code = EXIT_USAGE


class UsageError(ConsoleError):
    exit_code = EXIT_USAGE


class SourceUnavailable(ConsoleError):
    """A configured database cannot be reached or refused the login."""

    exit_code = EXIT_USAGE


class SchemaMissing(ConsoleError):
    """The database lacks the production tables or the console's own tables."""

    exit_code = EXIT_USAGE


class PermissionDenied(ConsoleError):
    """The console role (or the database user) may not do this."""

    exit_code = EXIT_PERMISSION


class OperationFailed(ConsoleError):
    exit_code = EXIT_FAILED


class ActionConflict(ConsoleError):
    """An action id was reused with other parameters, or is still running."""

    exit_code = EXIT_USAGE
