"""Kept for imports of ``refcal_zoo.hub.export``: the writer lives in :mod:`refcal_zoo.models.export`."""

from __future__ import annotations

from ..models.export import export_timm_folder

__all__ = ["export_timm_folder"]
