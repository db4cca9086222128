"""Hub-repo folders: timm-compatible ``config.json`` + ``model.safetensors`` (more in later releases)."""

from .export import export_timm_folder

__all__ = ["export_timm_folder"]
