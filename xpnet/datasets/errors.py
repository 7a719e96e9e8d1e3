"""The one error type of the data sets."""


class DatasetError(RuntimeError):
    """A data set is missing, corrupt or cannot be fetched; the message says what to do.

    ``summary`` is the same advice in one line, for the command line; it is
    the message itself where that already fits on one line.
    """

    def __init__(self, message, summary=None):
        super().__init__(message)
        self.summary = summary or " ".join(line.strip() for line in str(message).splitlines() if line.strip())
