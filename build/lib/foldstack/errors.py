"""Exceptions whose message is meant for the user: pipelines print it without a traceback."""


class FoldstackError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(FoldstackError):
    """A config file or a SET override is invalid."""


class DataError(FoldstackError):
    """An input file does not match what the competition config expects."""
