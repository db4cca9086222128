"""Writing weights too large for one shipped file as Hugging Face shards, tensors over the limit cut into parts.

The layout, and its reader :func:`refcal_zoo.weight_files.load_shards` (below the models, whose timm hook uses it), are
described in :mod:`refcal_zoo.weight_files`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..fileio import sha256_file
from ..weight_files import SHARD_INDEX, check_safetensors, load_shards, part_name
from .errors import IntegrityError, PublishError

__all__ = ["write_shards"]


def write_shards(weights: Path, folder: Path, max_shard_bytes: int) -> dict[str, str]:
    """Write the tensors of ``weights`` into ``folder`` as shards of at most ``max_shard_bytes`` (plus the index
    file); check that they hold exactly the same tensors; return ``{shard file: sha256}``."""
    from huggingface_hub import save_torch_state_dict

    state = load_file(str(weights))
    with safe_open(str(weights), framework="pt") as fh:
        metadata = fh.metadata() or {}
    # huggingface_hub sizes shards by their tensors' bytes; a shard's header (a subset of the file's entries and of
    # the parts' entries, with smaller offsets, padded to 8 bytes) is never longer than all of those: leave that room
    room = 16 + len(json.dumps(check_safetensors(weights)))
    parts = _split_large(state, max_shard_bytes - room)
    room += sum(len(json.dumps({k: {"dtype": "float32", "shape": list(t.shape), "data_offsets": [2**40, 2**40]}}))
                for k, t in parts.items() if k not in state)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".shards-") as tmp:  # it clears model*.safetensors there
        save_torch_state_dict(parts, tmp, max_shard_size=max_shard_bytes - room, metadata=metadata)
        written = sorted(Path(tmp).glob("model-*.safetensors"))
        if not (Path(tmp) / SHARD_INDEX).is_file():
            raise PublishError(f"'{weights}' fits in one file of {max_shard_bytes} bytes: ship it unsharded")
        over = [p.name for p in written if p.stat().st_size > max_shard_bytes]
        if over:
            raise PublishError(f"shard {over[0]} of '{weights}' is over {max_shard_bytes} bytes")  # pragma: no cover
        for p in [*written, Path(tmp) / SHARD_INDEX]:
            shutil.copyfile(p, folder / p.name)  # a new file: the umask's mode (huggingface_hub's are 0600)
    back, _ = load_shards(folder)
    same = set(back) == set(state) and all(back[k].dtype == t.dtype and torch.equal(back[k], t)
                                           for k, t in state.items())
    if not same:
        raise IntegrityError(f"the shards written from '{weights}' do not hold its tensors")  # pragma: no cover
    return {p.name: sha256_file(folder / p.name) for p in written}


def _split_large(state: dict[str, torch.Tensor], max_bytes: int) -> dict[str, torch.Tensor]:
    """``state`` with every tensor over ``max_bytes`` cut along dimension 0 into the fewest near-equal parts of at
    most half that (the other half leaves the shard room for the parts' header entries; copies, since a view would
    save, or be refused for, its whole storage)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if nbytes <= max_bytes or t.dim() == 0 or t.shape[0] < 2:
            out[name] = t
            continue
        n = min(t.shape[0], -(-nbytes // (max_bytes // 2)))
        chunks = torch.tensor_split(t, n, dim=0)
        out.update({part_name(name, i, n): c.clone() for i, c in enumerate(chunks, start=1)})
    return out
