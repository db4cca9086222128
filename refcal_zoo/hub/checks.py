"""Input and file checks: repo ids, zoo names, user paths, sha256 (the safetensors structure check is
:func:`refcal_zoo.weight_files.check_safetensors`, below the models)."""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from ..fileio import sha256_file
from .errors import IntegrityError, ResolveError

__all__ = ["check_model_name", "check_repo_id", "check_user_path", "verify_sha256"]

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
