"""The error that every data loader raises for malformed input."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A data file does not have the expected form.

    The message names the file, the key or index at fault and the form that was
    expected, so that a broken download or a custom data set can be fixed without
    reading the loader's source.
    """
