"""The command line's error for invalid configurations."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A user's configuration is invalid; the message names the key, the value and the fix."""
