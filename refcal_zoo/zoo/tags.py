"""timm pretrained tags for the zoo's published entries: ``timm.create_model("<arch>.<method>_<dataset>", ...)``.

Generated from the zoo index when ``refcal_zoo`` is imported (no network): each published entry becomes a tag of
its architecture (``resnet8_cifar.ce_digitslt``, ``resnet32_cifar.refcal_joint_cifar10lt``). Its pretrained cfg
carries the entry's preprocessing and class names and points timm at the weights shipped inside the package
(``file``; shards through ``custom_load``), or at the entry's Hub repo (``hf_hub_id``) when none are shipped,
so ``timm.create_model(tag, pretrained=True)`` returns the raw-logit classifier and
``timm.list_pretrained("*_cifar*")`` lists the tags. timm does not check sha256 pins: ``refcal_zoo.load(name)``
does. An entry whose head is not the default linear one (LDAM-DRW's cosine classifier) has its head arguments
registered with the tag, so the CIFAR model factories rebuild that head (timm's pretrained cfgs cannot carry model
arguments); for Hub-only entries ``hf-hub:`` reads them from ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace

from timm.models import _registry
from timm.models._pretrained import PretrainedCfg

from ..models._common import TAG_HEAD_ARGS
from ..weight_files import SHARD_INDEX
from .index import ZooEntry, load_index, shipped_folder

__all__ = ["pretrained_cfg_of", "register_timm_tags"]

_CFG_FIELDS = {f.name for f in fields(PretrainedCfg)}
_HEAD_ARGS = ("classifier", "cosine_scale")


def pretrained_cfg_of(entry: ZooEntry) -> PretrainedCfg | None:
    """The timm pretrained cfg of a published entry (shipped file, else its Hub repo); ``None`` if unpublished."""
    if not entry.published or not timm_has(entry.arch):
        return None
    arch_cfg = _registry._model_pretrained_cfgs[entry.arch]
    folder = shipped_folder(entry)  # the same shipped copy refcal_zoo.load(name) reads
    if folder is not None:
        sharded = not (folder / "model.safetensors").is_file()
        config = json.loads((folder / "config.json").read_text())
        values = {k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in _CFG_FIELDS}
        values = {k: tuple(v) if isinstance(v, list) and k != "label_names" else v for k, v in values.items()}
        # shards: timm's custom_load hands the index file to the model's load_pretrained (ShardedPretrained)
        weights = folder / (SHARD_INDEX if sharded else "model.safetensors")
        values.update(num_classes=entry.num_classes, file=str(weights), custom_load=sharded, hf_hub_id=None,
                      url=None, source=None)
        head = {k: v for k, v in (config.get("model_args") or {}).items() if k in _HEAD_ARGS}
        if head.get("classifier", "linear") != "linear":  # e.g. LDAM-DRW's cosine head: the factory rebuilds it
            TAG_HEAD_ARGS[entry.timm_tag] = head
        return replace(arch_cfg, **values)
    hub_id = entry.repo_id + (f"@{entry.revision}" if entry.revision else "")
    return replace(arch_cfg, num_classes=entry.num_classes, hf_hub_id=hub_id, file=None, url=None, source=None)


def timm_has(arch: str) -> bool:
    return arch in _registry._model_entrypoints and arch in _registry._model_pretrained_cfgs


def register_timm_tags() -> list[str]:
    """Register (or refresh) a timm pretrained tag for every published zoo entry; returns the ``arch.tag`` names."""
    names = []
    for entry in load_index().values():
        cfg = pretrained_cfg_of(entry)
        if cfg is None:
            continue
        full = entry.timm_tag
        arch, tag = full.split(".", 1)
        cfg = replace(cfg, architecture=arch, tag=tag)
        _registry._model_pretrained_cfgs[full] = cfg
        _registry._model_has_pretrained.add(full)
        if full not in _registry._model_with_tags[arch]:
            _registry._model_with_tags[arch].append(full)
        default = _registry._model_default_cfgs.get(arch)
        if default is not None:
            if tag not in default.cfgs:
                default.tags.append(tag)
            default.cfgs[tag] = cfg
        names.append(full)
    return names
