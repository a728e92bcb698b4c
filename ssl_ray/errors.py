"""The project's own error types: every user mistake becomes one readable message, never a traceback."""


class SSLRayError(Exception):
    """An error a user can fix (bad input, missing data, unreachable cluster). The CLI prints it alone."""


class ConfigError(SSLRayError, ValueError):
    """A hyperparameter, search space or option is invalid."""


class DataError(SSLRayError):
    """A dataset is unknown, absent or corrupt."""


class DivergenceError(SSLRayError):
    """A training loss became NaN or infinite."""
