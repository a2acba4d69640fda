"""The error of a bad configuration (attnfast.config and attnfast.config_original raise it; both
re-export it, so ``attnfast.config.ConfigError`` is this class)."""


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type or a malformed override in a configuration."""
