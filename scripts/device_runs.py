#!/usr/bin/env python
"""Carry a zoo build's run folders between this machine and a GPU machine lent for minutes at a time.

    python scripts/device_runs.py stage ~/zoo_build/<suite> device_runs   # here, before a call: what to carry
    python scripts/device_runs.py pack device_runs "$OUT"                  # there, at the end of the call
    python scripts/device_runs.py unpack <files folder> ~/zoo_build/<suite>  # here, after it

The device tool brings back at most 8 files of at most 16 MiB, 64 MiB together, and sends at most 64 MiB of
checkout (code, the exported data and what ``carry`` names). So:

- ``pack`` writes finished runs first (without ``best/``, ``last/`` and ``checkpoints/``: publishing reads the
  selected ``model.safetensors``, the record, metrics, logits and log), then interrupted runs, furthest first
  (their newest checkpoint only), as up to 7 tar files, and ``pack.json``: what was packed and what was left out,
  with every finished run's metrics (also of one too large to come back, e.g. a WRN-28-10's weights).
- ``unpack`` puts them into the build's ``--root`` (``runs/``); a finished run here is never replaced, an
  interrupted one only by a run with a newer checkpoint; each folder is swapped in whole (a cut-off swap is mended
  on the next call, as for ``snapshot``).
- ``stage`` copies the interrupted runs (newest checkpoint only) into the carried folder and lists the finished
  ones in ``finished.txt``, which ``scripts/zoo_build_gpu.sh`` passes to ``build_zoo.py --skip``.

The same carrying keeps a CPU build alive across machines (a session's machine may be a new one, without the
build's ``--root``): ``build_zoo.py --snapshot DIR`` calls

    python scripts/device_runs.py snapshot ~/zoo_build/<suite> benchmarks/results/<suite>/in_progress
    python scripts/device_runs.py restore benchmarks/results/<suite>/in_progress ~/zoo_build/<suite>

- ``snapshot`` keeps in DIR, a folder committed with the repository, each interrupted run as ``stage`` copies it
  (newest checkpoint, best weights so far, log, split record: about 6 MB for a ResNet-32), its ``config.yaml`` and
  ``lt_indices.json`` without machine paths (a resume rewrites the first and reads only the data's identity from
  the second); a run is rewritten only when it has a newer checkpoint, and dropped once it finished. A DEST whose
  runs git ignores (``*.incomplete/`` without a ``!`` rule for it) is refused: they could never be committed.
- ``restore`` copies them back into the root where the root has no run that got as far (nor the finished one).
- The repository keeps tracked files under 5 MB, so ``snapshot`` cuts a larger file (a WRN-28-2's 5.9 MB weights
  and optimizer state) into ``<file>.part-000``, ``-001``, ... of at most 5 MB beside ``<file>.parts.json`` (its
  size and sha256), and ``restore`` joins them and checks both before the run goes into the root.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

MAX_FILES = 8  # files back from $OUT: 7 tar files + pack.json
MAX_FILE = 16 * 2**20
MAX_TOTAL = 64 * 2**20
MANIFEST = "pack.json"
FINISHED_LEFT_OUT = ("best", "last", "checkpoints")  # copies of weights that publishing does not read
INCOMPLETE = ".incomplete"
MAX_KEPT_FILE = 5_000_000  # the repository's limit for a tracked file (refcal_zoo.zoo.update_index)
PARTS = ".parts.json"


def _checkpoints(run: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (the engine's rule for what a resume may use)."""
    from refcal_zoo.engine.checkpoint import complete_checkpoints

    return complete_checkpoints(run)[::-1]


def _runs(runs_dir: Path) -> list[Path]:
    """The run folders of ``runs_dir``, never the dot-named leftovers of a cut-off swap (``_mend_cut_swaps``)."""
    if not runs_dir.is_dir():
        return []
    return [d for d in sorted(runs_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def run_files(run: Path) -> list[Path]:
    """The files of ``run`` that travel: a finished run without weight copies, an interrupted one with its newest
    checkpoint only."""
    if run.name.endswith(INCOMPLETE):
        newest = _checkpoints(run)[-1:]
        keep = [p for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.relative_to(run).parts]
        return sorted(keep + [p for d in newest for p in d.rglob("*") if p.is_file()])
    return sorted(p for p in run.rglob("*") if p.is_file() and p.relative_to(run).parts[0] not in FINISHED_LEFT_OUT)


def _tar_size(files: list[Path]) -> int:
    """Bytes of an uncompressed tar of ``files``: a 512-byte header and whole 512-byte blocks per file (+ folders)."""
    return sum(512 + -(-f.stat().st_size // 512) * 512 for f in files) + 512 * 8


def epochs_done(run: Path) -> int:
    """Epochs logged by ``run`` (all stages): how far an interrupted run got."""
    log = run / "log.jsonl"
    if not log.is_file():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.strip().startswith("{"))


def pack(root: Path, out: Path, max_files: int = MAX_FILES, max_file: int = MAX_FILE,
         max_total: int = MAX_TOTAL) -> dict:
    """Pack ``root/runs/*`` into ``out`` (see the module docstring); returns the manifest it writes."""
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        raise SystemExit(f"error: no runs/ folder in '{root}': pass the build's --root")
    out.mkdir(parents=True, exist_ok=True)
    runs = _runs(runs_dir)
    finished = [d for d in runs if not d.name.endswith(INCOMPLETE) and (d / "metrics.json").is_file()]
    partial = sorted((d for d in runs if d.name.endswith(INCOMPLETE) and _checkpoints(d)),
                     key=lambda d: (-epochs_done(d), d.name))
    bins: list[list[Path]] = []
    sizes: list[int] = []
    manifest: dict = {"finished": {}, "interrupted": {}, "left_out": {}}
    budget = max_total - 2**20  # room for pack.json
    for run in finished + partial:
        files = run_files(run)
        size = _tar_size(files)
        fits = [i for i, s in enumerate(sizes) if s + size <= max_file]
        if size > max_file:
            why = f"{size / 2**20:.1f} MiB alone: over the {max_file / 2**20:.0f} MiB a file may have"
        elif sum(sizes) + size > budget:
            why = f"no room left in the {max_total / 2**20:.0f} MiB that come back"
        elif not fits and len(bins) >= max_files - 1:
            why = f"no room left in {max_files - 1} tar files"
        else:
            why = None
        if why:
            manifest["left_out"][run.name] = why
        else:
            i = fits[0] if fits else len(bins)
            if i == len(bins):
                bins.append([])
                sizes.append(512 * 2)
            bins[i].append(run)
            sizes[i] += size
        if run in finished:
            manifest["finished"][run.name] = json.loads((run / "metrics.json").read_text())
        else:
            manifest["interrupted"][run.name] = {"epochs_logged": epochs_done(run)}
    for i, members in enumerate(bins):
        with tarfile.open(out / f"runs-{i}.tar", "w") as tar:
            for run in members:
                for f in run_files(run):
                    tar.add(f, arcname=f"runs/{f.relative_to(runs_dir).as_posix()}", recursive=False)
    manifest["files"] = [f"runs-{i}.tar" for i in range(len(bins))]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _safe_members(tar: tarfile.TarFile, name: str) -> dict[str, list[tarfile.TarInfo]]:
    """The tar's members grouped by run folder; anything but plain files under ``runs/<run>/`` is refused."""
    groups: dict[str, list[tarfile.TarInfo]] = {}
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if not m.isfile() or len(parts) < 3 or parts[0] != "runs" or ".." in parts or Path(m.name).is_absolute():
            raise SystemExit(f"error: {name} holds '{m.name}', not a file of runs/<run>/: not a pack of "
                             "scripts/device_runs.py; nothing was unpacked from it")
        groups.setdefault(parts[1], []).append(m)
    return groups


def unpack(src: Path, root: Path) -> list[str]:
    """Unpack the tar files of ``src`` into ``root/runs`` (see the module docstring); returns what it did."""
    tars = sorted(src.glob("runs-*.tar"))
    if not tars:
        raise SystemExit(f"error: no runs-*.tar in '{src}': pass the folder the device call's files landed in")
    runs_dir = root / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    _mend_cut_swaps(runs_dir)
    done = []
    for path in tars:
        with tarfile.open(path) as tar:
            for run, members in sorted(_safe_members(tar, path.name).items()):
                finished_name = run.removesuffix(INCOMPLETE)
                here, here_finished = runs_dir / run, runs_dir / finished_name
                if (here_finished / "metrics.json").is_file():
                    done.append(f"kept {finished_name}: finished here already")
                    continue
                tmp = runs_dir / f".unpack-{run}"
                if tmp.exists():
                    shutil.rmtree(tmp)
                tar.extractall(tmp, members=members, filter="data")
                new = tmp / "runs" / run
                if run.endswith(INCOMPLETE) and here.is_dir() and _newest_step(here) >= _newest_step(new):
                    shutil.rmtree(tmp)  # a resume starts from the newest checkpoint: that is how far a run got
                    done.append(f"kept {run}: the copy here got as far (checkpoint step {_newest_step(here)})")
                    continue
                _swap_in(new, here)
                shutil.rmtree(tmp)
                if not run.endswith(INCOMPLETE) and (runs_dir / (run + INCOMPLETE)).is_dir():
                    shutil.rmtree(runs_dir / (run + INCOMPLETE))  # the interrupted run it finished
                done.append(f"unpacked {run} ({epochs_done(here)} epochs logged)")
    return done


def _copy_run(run: Path, target: Path) -> None:
    """Copy the files of ``run`` that travel (``run_files``) into the folder ``target``."""
    for f in run_files(run):
        copy = target / f.relative_to(run)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, copy)


def stage(root: Path, dest: Path) -> list[str]:
    """Copy ``root``'s interrupted runs (newest checkpoint only) into ``dest/runs`` and list the finished ones in
    ``dest/finished.txt``; ``dest`` is replaced (it is the carried copy, never the only one)."""
    runs_dir = root / "runs"
    if dest.resolve() == root.resolve():
        raise SystemExit("error: the carried folder must not be the build's root")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "runs").mkdir(parents=True)
    runs = _runs(runs_dir)
    finished = [d.name for d in runs if not d.name.endswith(INCOMPLETE) and (d / "metrics.json").is_file()]
    staged = []
    for run in runs:
        if run.name.endswith(INCOMPLETE) and _checkpoints(run) and run.name.removesuffix(INCOMPLETE) not in finished:
            _copy_run(run, dest / "runs" / run.name)
            staged.append(run.name)
    (dest / "finished.txt").write_text("".join(f"{name}\n" for name in finished))
    return staged


def _newest_step(run: Path) -> int:
    """Global step of ``run``'s newest complete checkpoint (-1 without one): how far a resume would start."""
    newest = _checkpoints(run)[-1:]
    return int(newest[0].name.rsplit("_", 1)[1]) if newest else -1


def _mend_cut_swaps(folder: Path) -> None:
    """Undo what a process killed inside ``_swap_in`` (or while copying) left in ``folder``: an ``.old-<run>``
    without its ``<run>`` goes back to its name; other leftovers (``.old-``, ``.new-``, ``.restore-``,
    ``.unpack-``) go."""
    if not folder.is_dir():
        return
    for leftover in sorted(d for d in folder.iterdir() if d.is_dir() and d.name.startswith(".")):
        for prefix in (".old-", ".new-", ".restore-", ".unpack-"):
            if leftover.name.startswith(prefix):
                here = folder / leftover.name.removeprefix(prefix)
                if prefix == ".old-" and not here.exists():
                    leftover.rename(here)
                else:
                    shutil.rmtree(leftover)


def _swap_in(new: Path, here: Path) -> None:
    """Put the folder ``new`` at ``here`` (same file system): between its two renames a kill leaves ``.old-<name>``
    alone, which ``_mend_cut_swaps`` puts back."""
    old = here.with_name(f".old-{here.name}")
    if old.exists():
        shutil.rmtree(old)
    if here.exists():
        here.rename(old)
    new.rename(here)
    if old.exists():
        shutil.rmtree(old)


def _portable(run: Path) -> None:
    """Rewrite ``run``'s ``config.yaml`` and ``lt_indices.json`` without machine paths (``dataset.path`` and the
    data source by identity, no ``output_dir``): a resume checks neither path and rewrites ``config.yaml``."""
    import yaml

    from refcal_zoo.fileio import write_json, write_yaml
    from refcal_zoo.hub.publish import public_lt_record, public_train_config

    if (run / "config.yaml").is_file():
        write_yaml(run / "config.yaml", public_train_config(yaml.safe_load((run / "config.yaml").read_text()) or {},
                                                            local=True))
    if (run / "lt_indices.json").is_file():
        write_json(run / "lt_indices.json", public_lt_record(json.loads((run / "lt_indices.json").read_text())))


def split_large_files(folder: Path, max_file: int) -> list[str]:
    """Cut each file of ``folder`` over ``max_file`` bytes into ``<file>.part-NNN`` pieces of at most that size plus
    ``<file>.parts.json`` (size, sha256, pieces), and remove it; returns the files cut (relative paths)."""
    from refcal_zoo.fileio import sha256_file

    cut = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > max_file):
        pieces = []
        with f.open("rb") as fh:
            while block := fh.read(max_file):
                piece = f.with_name(f"{f.name}.part-{len(pieces):03d}")
                piece.write_bytes(block)
                pieces.append(piece.name)
        record = {"bytes": f.stat().st_size, "sha256": sha256_file(f), "parts": pieces}
        f.with_name(f.name + PARTS).write_text(json.dumps(record, indent=1) + "\n")
        f.unlink()
        cut.append(f.relative_to(folder).as_posix())
    return cut


def join_split_files(folder: Path) -> list[str]:
    """Undo ``split_large_files`` in ``folder``: each ``<file>.parts.json`` and its pieces become ``<file>`` again,
    its size and sha256 checked; returns the files joined (relative paths)."""
    from refcal_zoo.fileio import sha256_file

    joined = []
    for record_path in sorted(folder.rglob("*" + PARTS)):
        target = record_path.with_name(record_path.name.removesuffix(PARTS))
        try:
            record = json.loads(record_path.read_text())
            size, digest = int(record["bytes"]), str(record["sha256"])
            pieces = [record_path.with_name(name) for name in record["parts"]]
            with target.open("wb") as out:
                for piece in pieces:
                    out.write(piece.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error: the snapshot's pieces of '{target}' cannot be joined ({exc}); check out that "
                             "run folder again from git, or delete it to start the cell afresh") from None
        if target.stat().st_size != size or sha256_file(target) != digest:
            raise SystemExit(f"error: the pieces of '{target}' do not join into the file that was cut (size or "
                             "sha256 differ); check out that run folder again from git, or delete it to start the "
                             "cell afresh")
        for piece in pieces:
            piece.unlink()
        record_path.unlink()
        joined.append(target.relative_to(folder).as_posix())
    return joined


def snapshot(root: Path, dest: Path, max_file: int = MAX_KEPT_FILE) -> list[str]:
    """Keep ``dest/runs`` a copy of ``root``'s interrupted runs (see the module docstring); returns what changed."""
    runs_dir, kept_dir = root / "runs", dest / "runs"
    if dest.resolve() == root.resolve():
        raise SystemExit("error: the snapshot folder must not be the build's root")
    runs = _runs(runs_dir)
    finished = {d.name for d in runs if not d.name.endswith(INCOMPLETE) and (d / "metrics.json").is_file()}
    _mend_cut_swaps(kept_dir)
    changed = []
    for run in runs:
        if not run.name.endswith(INCOMPLETE) or run.name.removesuffix(INCOMPLETE) in finished:
            continue
        step, kept = _newest_step(run), kept_dir / run.name
        oversized = kept.is_dir() and any(f.stat().st_size > max_file for f in kept.rglob("*") if f.is_file())
        if step < 0 or (kept.is_dir() and _newest_step(kept) == step and not oversized):
            continue  # (a copy kept whole by an older snapshot is taken again, in pieces)
        tmp = kept_dir / f".new-{run.name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            _copy_run(run, tmp)
        except FileNotFoundError:  # the engine dropped that checkpoint meanwhile: the next snapshot takes the new one
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        _portable(tmp)
        cut = split_large_files(tmp, max_file)
        _swap_in(tmp, kept)
        pieces = f"; {len(cut)} file{'s' * (len(cut) > 1)} over {max_file} bytes kept in pieces" if cut else ""
        changed.append(f"kept {run.name} (checkpoint step {step}, {epochs_done(kept)} epochs logged{pieces})")
    for name in sorted(finished):
        if (kept_dir / (name + INCOMPLETE)).is_dir():
            shutil.rmtree(kept_dir / (name + INCOMPLETE))
            changed.append(f"dropped {name + INCOMPLETE}: finished")
    return changed


def check_committable(dest: Path) -> None:
    """Refuse, in one line, a snapshot folder whose runs the enclosing git work tree ignores (``*.incomplete/``
    without a ``!`` rule for it): its snapshots could never be committed and would go with the machine. Nothing to
    check outside a git work tree or without git."""
    probe = (dest / "runs" / f"run{INCOMPLETE}" / "log.jsonl").expanduser().resolve()
    here = next((p for p in probe.parents if p.is_dir()), None)
    try:
        found = subprocess.run(["git", "-C", str(here), "check-ignore", "-v", "--no-index", str(probe)],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return
    rule = found.stdout.split("\t")[0]  # "<file>:<line>:<pattern>"; a "!" pattern that matched lets the path in
    if found.returncode == 0 and not rule.split(":", 2)[-1].startswith("!"):  # 1: not ignored; 128: no work tree
        raise SystemExit(f"error: git ignores the runs of the snapshot folder {dest} (rule {rule}), so they could "
                         f"never be committed: use benchmarks/results/<suite>/in_progress* or add a '!' rule for it")


def restore(src: Path, root: Path) -> list[str]:
    """Copy the runs that ``snapshot`` kept in ``src`` into ``root/runs`` where they got further than the runs
    there (a finished run there is never touched); returns what it did."""
    runs_dir = root / "runs"
    _mend_cut_swaps(src / "runs")
    _mend_cut_swaps(runs_dir)
    kept = [d for d in _runs(src / "runs") if d.name.endswith(INCOMPLETE)]
    done = []
    for run in kept:
        here = runs_dir / run.name
        if (runs_dir / run.name.removesuffix(INCOMPLETE) / "metrics.json").is_file():
            done.append(f"kept {run.name.removesuffix(INCOMPLETE)}: finished here already")
            continue
        if here.is_dir() and _newest_step(here) >= _newest_step(run):
            continue  # the run here got as far: nothing to say
        runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = runs_dir / f".restore-{run.name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(run, tmp)
        join_split_files(tmp)  # before the swap: a damaged snapshot never replaces a run here
        _swap_in(tmp, here)
        done.append(f"restored {run.name} ({epochs_done(here)} epochs logged)")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for command, first, second, text in (
        ("pack", "root", "out", "there: the runs of ROOT into OUT as tar files + pack.json"),
        ("unpack", "src", "root", "here: the tar files of SRC into the build root ROOT"),
        ("stage", "root", "dest", "here: ROOT's interrupted runs and finished list into DEST, to carry"),
        ("snapshot", "root", "dest", "ROOT's interrupted runs into DEST, a folder committed with the repository"),
        ("restore", "src", "root", "the runs that snapshot kept in SRC into the build root ROOT"),
    ):
        parser = sub.add_parser(command, help=text)
        parser.add_argument(first, type=Path)
        parser.add_argument(second, type=Path)
    args = ap.parse_args(argv)
    if args.command == "snapshot":
        check_committable(args.dest)
        print("\n".join(snapshot(args.root.expanduser(), args.dest)) or "snapshot unchanged")
    elif args.command == "restore":
        print("\n".join(restore(args.src, args.root.expanduser())) or "nothing to restore")
    elif args.command == "pack":
        manifest = pack(args.root, args.out)
        print(f"packed {len(manifest['files'])} files: {len(manifest['finished'])} finished, "
              f"{len(manifest['interrupted'])} interrupted runs; left out: {manifest['left_out'] or 'none'}")
    elif args.command == "unpack":
        print("\n".join(unpack(args.src, args.root.expanduser())))
    else:
        staged = stage(args.root.expanduser(), args.dest)
        size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
        print(f"staged {len(staged)} interrupted runs ({size / 2**20:.1f} MiB) into {args.dest}: "
              f"{', '.join(staged) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
