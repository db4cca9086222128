"""User-facing errors of the Hub / zoo layer (each names the problem and the fix)."""

from __future__ import annotations

from ..errors import IntegrityError, RefCalZooError

__all__ = ["IntegrityError", "NotAvailableError", "PublishError", "ResolveError"]


class ResolveError(RefCalZooError):
    """A model name, path or repo id that cannot be resolved (unknown name, bad id, ``..`` tricks)."""


class NotAvailableError(ResolveError):
    """A known model whose files are not available here (offline and not cached, or never published)."""


class PublishError(RefCalZooError):
    """A publish folder or Hub push that cannot be done as asked (no token, bad folder, offline)."""
