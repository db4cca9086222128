"""Hub-repo folders: verified loading of a folder or ``hf-hub:`` repo, publishing a run, pushing, model cards.

A published folder is a Hugging Face Hub model repo that timm can read: ``model.safetensors`` + timm's
``config.json`` (the run record, :mod:`refcal_zoo.record`, in its top-level ``"run_record"`` key) + ``README.md``
(model card with a ``model-index``) + the evidence (``metrics.json``, reliability diagrams, ``train_config.yaml``,
...). This layer knows nothing of the zoo index: :mod:`refcal_zoo.zoo` (names, timm tags, shipped weights,
``ZooModel``) builds on it, never the other way round.
"""

from .card import build_model_card, card_metrics, read_folder
from .dataset_export import export_longtail_dataset
from .errors import IntegrityError, NotAvailableError, PublishError, ResolveError
from .export import export_timm_folder
from .loading import LoadedFolder, Resolved, load_folder, predict_logits, predict_proba, resolve_folder
from .publish import migrate_folder, publish_run, push_folder, save_model_folder

__all__ = [
    "IntegrityError",
    "LoadedFolder",
    "NotAvailableError",
    "PublishError",
    "ResolveError",
    "Resolved",
    "build_model_card",
    "card_metrics",
    "export_longtail_dataset",
    "export_timm_folder",
    "load_folder",
    "migrate_folder",
    "predict_logits",
    "predict_proba",
    "publish_run",
    "push_folder",
    "read_folder",
    "resolve_folder",
    "save_model_folder",
]
