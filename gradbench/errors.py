"""The two kinds of error the CLI turns into one line on stderr and a non-zero exit."""


class GradbenchError(Exception):
    """A problem the user can fix (bad data, unreachable budget); exit code 1."""

    exit_code = 1


class UsageError(GradbenchError):
    """Bad command-line input: unknown name, malformed value, impossible combination; exit 2."""

    exit_code = 2


class DataError(GradbenchError):
    """Missing, corrupt or unverifiable data; exit 1."""
