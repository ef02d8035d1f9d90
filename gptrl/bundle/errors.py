"""The one error type a bad bundle raises."""


class BundleError(ValueError):
    """A bundle that cannot be loaded: the message names the file and the key at fault."""
