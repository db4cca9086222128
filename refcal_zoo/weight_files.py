"""Weight files read safely: the safetensors structure check, and shards in Hugging Face's layout.

It sits below :mod:`refcal_zoo.models` (whose timm ``custom_load`` hook reads shards) and the Hub layer (which writes
them: :func:`refcal_zoo.hub.shards.write_shards`), so the models never import the publishing side.

The repository keeps tracked files under 5 MB (git is no weight store), so a model whose ``model.safetensors`` is
larger - a WRN-28-2 (5.9 MB), an EfficientViT-B0 (8.6 MB) - ships as shards (written by
``huggingface_hub.save_torch_state_dict``): ``model-00001-of-00002.safetensors`` ... and
``model.safetensors.index.json``, the layout that transformers and ``huggingface_hub.load_torch_model`` read. Where
that layout has no answer - one tensor larger than the limit, which Hugging Face puts alone in a larger shard
(EfficientViT-B0's 5.2 MB classifier weight) - the tensor is cut along its first dimension into parts named
``<name>#part<i>of<n>`` (``#`` never occurs in a PyTorch parameter name), each small enough for a shard, and
:func:`load_shards` joins them again; such a folder is read by :func:`load_shards` (``refcal_zoo.load`` and the timm
tags' loader), not by ``load_torch_model``. The zoo index pins each shard's sha256 beside the sha256 of the
one-file ``model.safetensors`` they were cut from (the Hub copy stays one file: timm's ``hf-hub:`` loader reads
``model.safetensors`` only).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import IntegrityError
from .fileio import sha256_file

__all__ = ["SHARD_INDEX", "check_safetensors", "is_sharded", "load_shards", "part_name", "shard_files"]

SHARD_INDEX = "model.safetensors.index.json"
_SHARD_NAME = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_HINT = "delete the folder and reinstall refcal_zoo (or copy it again)"


def check_safetensors(path: Path) -> dict:
    """Parse the safetensors header and check the file holds every byte it announces; return the header.

    A truncated download or a partial copy fails here with a message naming the file, before any tensor is read.
    """
    path = Path(path)
    size = path.stat().st_size
    hint = "delete it and download or copy it again"
    if size < 8:
        raise IntegrityError(f"'{path}' is not a safetensors file (only {size} bytes); {hint}")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8 or n > 100_000_000:
            raise IntegrityError(f"'{path}' is truncated or not a safetensors file (header of {n} bytes announced, "
                                 f"file has {size}); {hint}")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"'{path}' has a corrupt safetensors header; {hint}") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"'{path}' has a corrupt safetensors header; {hint}")
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + (max(ends) if ends else 0)
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says (corrupt)"
        raise IntegrityError(f"'{path}' is {what}: {size} bytes, expected {expected}; {hint}")
    return header


def is_sharded(folder: Path) -> bool:
    """Whether ``folder`` holds sharded weights (an index file and no one-file ``model.safetensors``)."""
    return (folder / SHARD_INDEX).is_file() and not (folder / "model.safetensors").is_file()


#: a part of a tensor cut to fit a shard: ``<name>#part<i>of<n>`` (i counted from 1)
_PART = re.compile(r"^(.+)#part(\d+)of(\d+)$")


def part_name(name: str, i: int, n: int) -> str:
    """The key of part ``i`` (from 1) of ``n`` of the tensor ``name`` (the form ``_PART`` reads)."""
    return f"{name}#part{i}of{n}"


def _join_parts(state: dict[str, torch.Tensor], header: dict, where: Path) -> None:
    """Join the parts of every cut tensor in ``state`` (and its ``header`` entry) back into the one tensor."""
    cut: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    for key in [k for k in state if "#" in k]:
        m = _PART.match(key)
        if m is None or counts.setdefault(m.group(1), int(m.group(3))) != int(m.group(3)):
            raise IntegrityError(f"'{where}' holds a tensor '{key}' that is no part of a cut tensor; {_HINT}")
        cut.setdefault(m.group(1), {})[int(m.group(2))] = key
    for name, parts in cut.items():
        if sorted(parts) != list(range(1, counts[name] + 1)) or name in state:
            raise IntegrityError(f"'{where}' holds parts {sorted(parts)} of '{name}' where {counts[name]} were cut; "
                                 f"{_HINT}")
        keys = [parts[i] for i in sorted(parts)]
        state[name] = torch.cat([state.pop(k) for k in keys], dim=0)
        first = header.pop(keys[0], {})
        for k in keys[1:]:
            header.pop(k, None)
        header[name] = {"dtype": first.get("dtype"), "shape": list(state[name].shape)}


def shard_files(folder: Path) -> list[str]:
    """The shard files ``folder``'s index names (checked: plain ``model-NNNNN-of-NNNNN.safetensors`` names)."""
    return sorted(_read_index(folder))


def _read_index(folder: Path) -> dict[str, list[str]]:
    """``{shard file: [tensor names]}`` of the folder's index file, its shard names checked (plain file names)."""
    path = folder / SHARD_INDEX
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"'{path}' cannot be read as a shard index ({exc}); {_HINT}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise IntegrityError(f"'{path}' has no weight_map; {_HINT}")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise IntegrityError(f"'{path}' maps '{name}' to '{shard}', not a shard file of this folder "
                                 "(model-NNNNN-of-NNNNN.safetensors); refusing to load")
        shards.setdefault(shard, []).append(name)
    return shards


def load_shards(folder: Path, pins: dict[str, str] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and the merged safetensors header of the shards in ``folder``.

    With ``pins`` (``{shard file: sha256}``, from the zoo index) the shards must be exactly those files with those
    hashes; every shard is checked for truncation and must hold exactly the tensors the index maps to it."""
    shards = _read_index(folder)
    if pins is not None and set(pins) != set(shards):
        raise IntegrityError(f"'{folder / SHARD_INDEX}' lists shards {sorted(shards)} but the zoo index pins "
                             f"{sorted(pins)}: the folder was replaced; {_HINT}")
    state: dict[str, torch.Tensor] = {}
    header: dict = {}
    for shard, names in sorted(shards.items()):
        path = folder / shard
        if not path.is_file():
            raise IntegrityError(f"'{path}' is missing (listed in {SHARD_INDEX}); {_HINT}")
        shard_header = check_safetensors(path)
        if pins is not None and (actual := sha256_file(path)) != pins[shard].lower():
            raise IntegrityError(f"sha256 of '{path}' is {actual}, but the zoo index pins {pins[shard]}: the file "
                                 f"is corrupt or was replaced; refusing to load it ({_HINT})")
        try:
            tensors = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise IntegrityError(f"'{path}' cannot be read as safetensors ({exc}); {_HINT}") from None
        if set(tensors) != set(names):
            raise IntegrityError(f"'{path}' does not hold the tensors {SHARD_INDEX} maps to it; {_HINT}")
        state.update(tensors)
        header.update({k: v for k, v in shard_header.items() if k != "__metadata__"})
    _join_parts(state, header, folder / SHARD_INDEX)
    return state, header
