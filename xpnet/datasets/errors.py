"""The one error type of the data sets."""


class DatasetError(RuntimeError):
    """A data set is missing, corrupt or cannot be fetched; the message says what to do."""
