"""Write a model as a timm/Hugging Face Hub folder (``model.safetensors`` + timm's ``config.json``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from timm.models import save_for_hf
from torch import nn

__all__ = ["export_timm_folder"]


def export_timm_folder(
    model: nn.Module, folder: str | Path, *, label_names: list[str], refcal: dict[str, Any]
) -> None:
    """Save weights as safetensors and a timm ``config.json`` with our metadata in a top-level ``refcal`` block.

    Extra keys inside ``pretrained_cfg`` would break ``timm.create_model`` (``PretrainedCfg`` rejects unknown
    fields), while unknown top-level keys are ignored, so everything of ours lives under ``"refcal"``.
    """
    json.dumps(refcal)  # fail early (before writing) on metadata that is not JSON
    if any(not t.is_contiguous() for t in model.state_dict().values()):  # e.g. trained with channels_last
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    save_for_hf(
        model, str(folder), model_config={"label_names": list(label_names), "refcal": refcal},
        safe_serialization=True,
    )
