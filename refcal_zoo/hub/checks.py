"""Input and file checks: repo ids, zoo names, user paths, safetensors structure, sha256."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path, PurePath

from ..fileio import sha256_file
from .errors import IntegrityError, ResolveError

__all__ = ["check_model_name", "check_repo_id", "check_safetensors", "check_user_path", "verify_sha256"]

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_NAME = re.compile(rf"^{_PART}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_repo_id(repo_id: str) -> str:
    """``org/name`` with Hub-legal characters, no ``..`` / ``--``; anything else is refused."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ResolveError(
            f"'{repo_id}' is not a Hub repo id of the form 'org/name' (letters, digits, '-', '_', '.'; "
            "no '..' or '--', no leading/trailing '.' or '-'); e.g. 'refcal-zoo/resnet32-cifar10lt-ce'"
        )
    return repo_id


def check_model_name(name: str) -> str:
    """A zoo name (a folder name under the shipped weights): one path component, no separators or ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ResolveError(
            f"'{name}' is not a valid zoo model name (one component of letters, digits, '-', '_', '.'; "
            "no '/', no '..'); see refcal_zoo.list_models()"
        )
    return name


def check_user_path(path: str | Path) -> Path:
    """Refuse paths that climb out of a folder they just named (``runs/x/../../etc``).

    Leading ``..`` components (``../runs/x``) are ordinary relative paths and are kept.
    """
    parts = PurePath(path).parts
    seen_name = False
    for part in parts:
        if part == "..":
            if seen_name:
                raise ResolveError(
                    f"path '{path}' goes back up with '..' after a folder name; pass the plain path of the "
                    "folder you mean (e.g. an absolute path)"
                )
        elif part not in (".", "/", "\\") and not PurePath(part).anchor:
            seen_name = True
    return Path(path).expanduser()


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


def verify_sha256(path: Path, expected: str | None, source: str) -> str:
    """sha256 of ``path``; raise if ``expected`` is given and differs (``source`` says where it was pinned)."""
    actual = sha256_file(path)
    if expected is not None:
        if not isinstance(expected, str) or not _SHA256.match(expected.lower()):
            raise IntegrityError(f"the sha256 pinned in {source} ('{expected}') is not a 64-hex digest; fix it")
        if actual != expected.lower():
            raise IntegrityError(
                f"sha256 of '{path}' is {actual}, but {source} pins {expected}: the file is corrupt or was "
                "replaced; refusing to load it (delete it and download or copy it again)"
            )
    return actual
