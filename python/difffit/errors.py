"""Exceptions raised by difffit for bad input."""


class DifffitInputError(ValueError):
    """Bad user input: a file that cannot be read, an empty selection, a bad shape.

    The message always names the offending file or argument and the problem.
    """
