"""Errors that name the problem and the fix. Entry points turn them into a one-line message and exit code 2."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "IntegrityError", "RefCalZooError", "RunFolderError"]


class RefCalZooError(ValueError):
    """Base class of the package's user-facing errors (a ValueError, so generic callers can catch it)."""


class ConfigError(RefCalZooError):
    """An invalid configuration value or key."""


class DataError(RefCalZooError):
    """A dataset that cannot be found, read or used as asked."""


class RunFolderError(RefCalZooError):
    """An output folder that cannot be written as asked (e.g. it already holds a finished run)."""


class IntegrityError(RefCalZooError):
    """Files that fail verification: sha256 mismatch, truncated safetensors, weights that do not fit the config."""
