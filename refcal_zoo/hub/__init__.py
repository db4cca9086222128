"""Hub-repo folders and loading: ``load``, ``save_pretrained``, ``push_to_hub``, model cards, dataset export.

A published folder is a Hugging Face Hub model repo that timm can read: ``model.safetensors`` + timm's
``config.json`` (our metadata in its top-level ``"refcal"`` block) + ``README.md`` (model card with a
``model-index``) + the evidence (``metrics.json``, reliability diagrams, ``train_config.yaml``, ...).
"""

from .card import build_model_card, card_metrics, read_folder
from .dataset_export import export_longtail_dataset
from .errors import IntegrityError, NotAvailableError, PublishError, ResolveError
from .export import export_timm_folder
from .loading import Resolved, ZooModel, load, predict_logits, predict_proba, resolve
from .publish import push_to_hub, save_pretrained

__all__ = [
    "IntegrityError",
    "NotAvailableError",
    "PublishError",
    "ResolveError",
    "Resolved",
    "ZooModel",
    "build_model_card",
    "card_metrics",
    "export_longtail_dataset",
    "export_timm_folder",
    "load",
    "predict_logits",
    "predict_proba",
    "push_to_hub",
    "read_folder",
    "resolve",
    "save_pretrained",
]
