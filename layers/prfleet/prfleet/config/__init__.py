"""Configuration: the environment's settings (the one place that reads them), a repository's `.prfleet.toml`,
secrets from Secrets Manager, and the one way to build an AWS client."""

from prfleet.config.environment import DEFAULT_MODELS, PROVIDERS, ConfigError, Settings, now, settings

__all__ = ["DEFAULT_MODELS", "PROVIDERS", "ConfigError", "Settings", "now", "settings"]
