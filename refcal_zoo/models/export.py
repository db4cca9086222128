"""Write a model as a timm / Hugging Face Hub folder: ``model.safetensors`` + timm's ``config.json`` (+ run record)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from timm.models import save_for_hf
from torch import nn

from ..record import RECORD_KEY, RunRecord

__all__ = ["export_timm_folder"]


def export_timm_folder(
    model: nn.Module, folder: str | Path, *, label_names: list[str], record: RunRecord | None = None
) -> None:
    """Save weights as safetensors and a timm ``config.json``, the run record under its top-level key.

    Extra keys inside ``pretrained_cfg`` would break ``timm.create_model`` (``PretrainedCfg`` rejects unknown
    fields), while unknown top-level keys are ignored, so the record lives at the top level. The arguments that
    rebuild the model (timm records those given to ``timm.create_model``; a cosine classifier's type and scale are
    added from the model itself) go to the top-level ``model_args``, which ``timm.create_model("local-dir:...")`` and
    ``"hf-hub:..."`` pass back to the architecture.
    """
    extra: dict = {"label_names": list(label_names)}
    if record is not None:
        extra[RECORD_KEY] = record.to_dict()
        json.dumps(extra)  # fail early (before writing) on metadata that is not JSON
    if any(not t.is_contiguous() for t in model.state_dict().values()):  # e.g. trained with channels_last
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    head_args = model.classifier_args() if hasattr(model, "classifier_args") else {}
    save_for_hf(model, str(folder), model_config=extra, model_args=head_args or None, safe_serialization=True)
