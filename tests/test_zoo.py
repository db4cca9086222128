"""The zoo index: entries match their recipes, listing, org/env handling, registering a published folder."""


from __future__ import annotations

import json
import re
import shlex

import pytest
import torch
import yaml

import refcal_zoo
from refcal_zoo.config import load_config
from refcal_zoo.hub import IntegrityError, PublishError, ResolveError
from refcal_zoo.zoo import INDEX_PATH, STATUSES, format_table, get_entry, list_models, load_index
from refcal_zoo.zoo.update_index import add_recipe_entries, register

from .conftest import REPO, ZOO_NAME, copy_folder, write_index

CONFIGS = REPO / "recipes" / "configs"


def test_every_entry_trains_what_it_says():
    """recipe + overrides load, and give the entry's name, architecture, dataset, rho, seed and method."""
    index = load_index()
    assert index, "the index is empty"
    for name, e in index.items():
        assert e.status in STATUSES
        cfg = load_config(REPO / e.recipe, e.overrides)
        assert cfg.name == name, name
        assert cfg.model.arch == e.arch and e.arch.startswith(name.split("-")[0]), name
        assert cfg.dataset.path == e.dataset["id"] and cfg.dataset.rho == e.dataset["rho"], name
        assert cfg.dataset.lt_seed == e.dataset["lt_seed"], name
        assert cfg.method.name == e.method and cfg.method.base_loss == e.base_loss, name
        assert e.num_classes == {"uoft-cs/cifar10": 10, "uoft-cs/cifar100": 100, "digits": 10}[e.dataset["id"]]
        tokens = shlex.split(e.train_command)
        assert tokens[:5] == ["accelerate", "launch", "recipes/train.py", "--config", e.recipe]
        assert tokens[5:] == e.overrides
        if e.status == "recipe-only":
            assert e.sha256 is None and e.metrics is None


def test_every_recipe_config_has_an_entry_and_the_planned_ones_exist():
    names = set(list_models())
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        assert cfg.name in names, f"{path.name} has no index entry: run `refcal-zoo zoo add-recipes`"
        if path.name != "default.yaml":
            assert get_entry(cfg.name).recipe == f"recipes/configs/{path.name}"
    for planned in ("resnet32-cifar10lt-ce", "resnet32-cifar10lt-refcal", "resnet32-cifar10lt-refcal_joint",
                    "resnet32-cifar100lt-ce", "resnet32-cifar100lt-refcal", "resnet32-cifar100lt-refcal_joint",
                    "resnet8-digitslt-ce", "resnet8-digitslt-refcal"):
        assert planned in names
    assert all(get_entry(n).status == "recipe-only" for n in list_models("*cifar100lt*"))


def test_list_models_patterns_and_table():
    all_names = refcal_zoo.list_models()
    assert all_names == sorted(all_names) and len(all_names) >= 40
    c100 = list_models("*cifar100lt*")
    assert c100 and all("cifar100lt" in n for n in c100)
    assert list_models("resnet8-*") == [n for n in all_names if n.startswith("resnet8-")]
    assert list_models("nothing-*") == []
    assert list_models(status="published") == [n for n in all_names if get_entry(n).published]
    with pytest.raises(ResolveError, match="status must be one of"):
        list_models(status="done")
    table = format_table(c100)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["name", "arch", "dataset", "rho", "method"]
    assert len(lines) == len(c100) + 2 and all(n in table for n in c100)


def test_repo_id_follows_refcal_zoo_org(monkeypatch):
    monkeypatch.delenv("REFCAL_ZOO_ORG", raising=False)
    assert get_entry("resnet32-cifar10lt-ce").repo_id == "refcal-zoo/resnet32-cifar10lt-ce"
    monkeypatch.setenv("REFCAL_ZOO_ORG", "my-lab")
    assert get_entry("resnet32-cifar10lt-ce").repo_id == "my-lab/resnet32-cifar10lt-ce"
    monkeypatch.setenv("REFCAL_ZOO_ORG", "bad/org")
    with pytest.raises(ResolveError, match="not a Hub repo id"):
        _ = get_entry("resnet32-cifar10lt-ce").repo_id


def test_custom_org_tries_the_hub_for_recipe_only_entries(hf_env, no_network, monkeypatch, tmp_path):
    """With another org, a recipe-only name may have been pushed there: offline, say how to get it."""
    write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)  # every entry recipe-only
    monkeypatch.setenv("REFCAL_ZOO_ORG", "my-lab")
    from refcal_zoo.hub import NotAvailableError

    with pytest.raises(NotAvailableError, match="my-lab/resnet32-cifar10lt-ce.*HF_HUB_OFFLINE"):
        refcal_zoo.load("resnet32-cifar10lt-ce")


def test_bad_index_files_are_refused(tmp_path, monkeypatch):
    data = yaml.safe_load(INDEX_PATH.read_text())
    bad = dict(data["models"][ZOO_NAME], status="done", sha256=None)
    path = tmp_path / "index.yaml"
    path.write_text(yaml.safe_dump({"format": 1, "models": {ZOO_NAME: bad}}))
    with pytest.raises(ResolveError, match="status 'done'"):
        load_index(path)
    path.write_text(yaml.safe_dump({"format": 1, "models": {ZOO_NAME: dict(bad, status="published")}}))
    with pytest.raises(ResolveError, match="published entry .* has no sha256"):
        load_index(path)
    path.write_text(yaml.safe_dump({"format": 1, "models": {"../x": data["models"][ZOO_NAME]}}))
    with pytest.raises(ResolveError, match="not a valid zoo model name"):
        load_index(path)
    path.write_text("models: [")
    with pytest.raises(ResolveError, match="not valid YAML"):
        load_index(path)
    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(tmp_path / "missing.yaml"))
    with pytest.raises(ResolveError, match="does not exist"):
        list_models()


def test_register_fills_the_entry_and_embedded_weights_load_offline(published, hf_env, no_network, tmp_path,
                                                                    monkeypatch):
    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    before = load_index(index)
    entry = register(published, revision="v1.0", index=index, embed=True)
    assert entry.name == ZOO_NAME and entry.status == "published" and entry.revision == "v1.0"
    metrics = json.loads((published / "metrics.json").read_text())
    cfg = json.loads((published / "config.json").read_text())
    assert entry.sha256 == cfg["run_record"]["provenance"]["weights_sha256"]
    assert entry.metrics["accuracy"] == metrics["accuracy"] and entry.metrics["ts/ece"] == metrics["ts/ece"]
    assert entry.temperature == cfg["run_record"]["temperature"]
    after = load_index(index)
    assert after[ZOO_NAME].published and after[ZOO_NAME].sha256 == entry.sha256
    assert {n: e.to_dict() for n, e in after.items() if n != ZOO_NAME} == \
        {n: e.to_dict() for n, e in before.items() if n != ZOO_NAME}  # nothing else changed
    assert index.read_text().startswith("# refcal_zoo model index")
    assert (index.parent / "weights" / ZOO_NAME / "model.safetensors").is_file()
    model = refcal_zoo.load(ZOO_NAME)  # offline, no sockets: from the shipped weights, sha-checked
    assert model.zoo_info["source"] == "embedded" and model.zoo_info["revision"] == "v1.0"
    assert refcal_zoo.list_models(status="published") == [ZOO_NAME]


@pytest.mark.parametrize("failing", ["migrate_folder", "write_index"])
def test_a_failed_register_leaves_the_shipped_copy_and_the_index_as_they_were(failing, published, hf_env, tmp_path,
                                                                              monkeypatch):
    """The package copy is staged beside the shipped one (copy, card) and swapped in only after the index is
    written: a failure in either step changes neither."""
    from refcal_zoo.zoo import update_index

    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    newer = copy_folder(published, tmp_path / "newer")
    metrics = json.loads((newer / "metrics.json").read_text())
    (newer / "metrics.json").write_text(json.dumps({**metrics, "accuracy": 0.5}))
    before = (index.read_bytes(), (shipped / "metrics.json").read_bytes())

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(update_index, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        register(newer, index=index, embed=True)
    assert (index.read_bytes(), (shipped / "metrics.json").read_bytes()) == before
    assert sorted(p.name for p in shipped.parent.iterdir()) == [ZOO_NAME]  # no stage left behind
    monkeypatch.undo()
    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(index))
    assert register(newer, index=index, embed=True).metrics["accuracy"] == 0.5
    assert json.loads((shipped / "metrics.json").read_text())["accuracy"] == 0.5


def test_registering_other_weights_without_embedding_removes_the_stale_shipped_copy(published, hf_env, no_network,
                                                                                     tmp_path, monkeypatch):
    """A shipped copy whose weights the index no longer pins is removed (it would fail the sha256 check);
    re-registering the same weights without --embed keeps it."""
    from safetensors.torch import load_file, save_file

    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.hub import NotAvailableError

    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    register(published, index=index)  # the same weights: the copy stays
    assert refcal_zoo.load(ZOO_NAME).zoo_info["source"] == "embedded"
    other = copy_folder(published, tmp_path / "other")
    tensors = load_file(other / "model.safetensors")
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first] + 1e-3
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((other / "config.json").read_text())
    cfg["run_record"]["provenance"]["weights_sha256"] = sha256_file(other / "model.safetensors")
    (other / "config.json").write_text(json.dumps(cfg))
    assert register(other, index=index).sha256 == sha256_file(other / "model.safetensors")
    assert not shipped.exists()
    with pytest.raises(NotAvailableError, match="not in the Hugging Face cache"):
        refcal_zoo.load(ZOO_NAME)  # from the Hub (offline here), never from a copy of other weights


def test_register_refuses_mismatches(published, trained_run, tmp_path):
    index = write_index(tmp_path / "zoo", {})
    with pytest.raises(PublishError, match="does not match the index entry 'resnet32-cifar10lt-ce'.*architecture"):
        register(published, name="resnet32-cifar10lt-ce", index=index)
    with pytest.raises(PublishError, match="not a published folder"):
        register(trained_run, index=index)
    bad = copy_folder(published, tmp_path / "bad")
    blob = bytearray((bad / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="re-publish"):
        register(bad, index=index)
    assert load_index(index)[ZOO_NAME].status == "recipe-only"


def test_add_recipe_entries_adds_only_missing_configs(tmp_path):
    index = write_index(tmp_path / "zoo", {})
    data = yaml.safe_load(index.read_text())
    del data["models"]["resnet32-cifar10lt-ce"]
    data["models"]["resnet32-cifar10lt-refcal"]["notes"] = "kept as written"
    index.write_text(yaml.safe_dump(data))
    added = add_recipe_entries(CONFIGS, index=index, root=REPO)
    assert added == ["resnet32-cifar10lt-ce"]
    entries = load_index(index)
    assert entries["resnet32-cifar10lt-ce"].recipe == "recipes/configs/resnet32-cifar10lt-ce.yaml"
    assert entries["resnet32-cifar10lt-refcal"].notes == "kept as written"
    assert add_recipe_entries(CONFIGS, index=index, root=REPO) == []


@pytest.mark.parametrize("name", ["resnet8-digitslt-refcal_joint", "resnet8-digitslt-ce", "resnet8-digitslt-refcal"])
# (CIFAR-10-LT entries ship too; their check needs the CIFAR-10 test split: see test_shipped_cifar_entries)
def test_shipped_entries_load_offline_and_reproduce_their_metrics(name, hf_env, no_network):
    """The published digits-LT entries ship inside the package: load them with no network and no HF cache, and
    their test-split accuracy equals the index's (recomputed through predict_proba on the embedded data)."""
    from refcal_zoo.config import DatasetConfig
    from refcal_zoo.data import prepare_data

    entry = load_index(INDEX_PATH)[name]
    assert entry.published and entry.sha256
    model = refcal_zoo.load(name)
    assert model.zoo_info["source"] == "embedded"
    data = prepare_data(DatasetConfig(path="digits", val_split="validation", rho=10))
    with torch.no_grad():
        probs = model.predict_proba(data.test_images)
    accuracy = (probs.argmax(1) == data.test_labels).double().mean().item()
    assert accuracy == pytest.approx(entry.metrics["accuracy"], abs=1e-12)


def test_shipped_cifar_entries_reproduce_their_metrics(hf_env, no_network):
    """Every shipped CIFAR-10-LT entry, offline, on the shared CIFAR-10 test split (skipped where that copy is
    absent): its test accuracy equals the index's. An entry last trained, hence evaluated, on a GPU before evaluation
    switched TF32 off (``refcal_zoo.engine.evaluate.full_float32``) may differ by up to 3 of the 10,000 images:
    cuDNN's TF32 convolutions flip near ties (resnet32-cifar10lt-crl's seed-0 weights, shipped before seed 1's: 0.7781
    here, 0.7783 recorded on the H200)."""
    from .conftest import SHARED_CIFAR10

    if not SHARED_CIFAR10.is_dir():
        pytest.skip("shared CIFAR-10 copy (../shared/datasets/cifar10) absent")
    from refcal_zoo.data import load_image_splits
    from refcal_zoo.record import read_record

    weights = INDEX_PATH.parent / "weights"
    shipped = {n: e for n, e in load_index(INDEX_PATH).items()
               if e.published and e.dataset.get("name") == "CIFAR-10-LT" and (weights / n).is_dir()}
    assert "resnet32-cifar10lt-ce" in shipped
    test = load_image_splits(str(SHARED_CIFAR10), ["test"])
    for name, entry in shipped.items():
        model = refcal_zoo.load(name)
        assert model.zoo_info["source"] == "embedded", name
        with torch.no_grad():
            probs = model.predict_proba(test.images["test"])
        accuracy = (probs.argmax(1) == test.labels["test"]).double().mean().item()
        stretches = read_record(json.loads((weights / name / "config.json").read_text())).budget.device_stretches()
        last = stretches[-1].device if stretches else ""  # where it last trained, hence was evaluated ("": CPU era)
        on_gpu = bool(last) and not last.startswith(("CPU", "a device not recorded"))
        assert accuracy == pytest.approx(entry.metrics["accuracy"], abs=3e-4 if on_gpu else 1e-12), name


# --------------------------------------------------------------------------------------------------- timm tags


def test_timm_tags_of_the_shipped_entries_give_the_raw_logits_offline(hf_env, no_network):
    """timm.create_model("<arch>.<method>_<dataset>", pretrained=True) == refcal_zoo.load(name, calibrated=False)."""
    import timm

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shipped = [e for e in load_index(INDEX_PATH).values() if e.published and (INDEX_PATH.parent / "weights" / e.name)
               .is_dir()]
    assert {"resnet8_cifar.ce_digitslt", "resnet8_cifar.refcal_joint_digitslt",
            "resnet32_cifar.ce_cifar10lt"} <= {e.timm_tag for e in shipped}
    assert set(timm.list_pretrained("*_cifar*")) >= {e.timm_tag for e in shipped}
    for entry in shipped:
        via_timm = timm.create_model(entry.timm_tag, pretrained=True).eval()
        ours = refcal_zoo.load(entry.name, calibrated=False)
        with torch.no_grad():
            assert torch.equal(via_timm(x), ours(x)), entry.name
            assert not torch.equal(refcal_zoo.load(entry.name)(x), ours(x))  # calibrated differs: T != 1
        assert via_timm.pretrained_cfg["mean"] == tuple(ours.pretrained_cfg["mean"])
        assert ours.zoo_info["timm_tag"] == entry.timm_tag


def test_timm_tag_names():
    from refcal_zoo.record import dataset_slug, timm_tag

    assert get_entry("resnet32-cifar10lt-refcal_joint").timm_tag == "resnet32_cifar.refcal_joint_cifar10lt"
    assert get_entry("resnet8-digitslt-ce").timm_tag == "resnet8_cifar.ce_digitslt"
    assert timm_tag("resnet32_cifar", "refcal", dataset_slug("uoft-cs/cifar100", 100)) == \
        "resnet32_cifar.refcal_cifar100lt100"


# --------------------------------------------------------------------------------------------------- provenance


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_no_shipped_file_contains_an_absolute_path():
    from pathlib import PurePosixPath, PureWindowsPath

    text_path = re.compile(r"(?<![\w.:/])(?:/(?:work|home|root|tmp|mnt|data|Users|var|opt|srv)/|[A-Za-z]:\\)")
    roots = [INDEX_PATH.parent, REPO / "model_cards"]
    checked = 0
    for root in roots:
        for path in root.rglob("*"):
            if path.suffix in (".json", ".yaml"):
                data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
                bad = [s for s in _strings(data) if PurePosixPath(s).is_absolute() or PureWindowsPath(s).drive]
                assert not bad, f"{path}: {bad[:3]}"
                checked += 1
            if path.suffix in (".md", ".json", ".yaml", ".jsonl"):
                assert not text_path.search(path.read_text()), path
    assert checked >= 6 * 4


def test_no_tracked_file_is_over_the_repository_limit():
    """Git is no weight store: every tracked file is at most 5 MB (a tensor larger than that ships cut into parts:
    refcal_zoo.hub.shards). Catches weights or a build snapshot committed whole (a snapshot keeps such files in
    pieces: scripts/device_runs.py)."""
    import shutil
    import subprocess

    from refcal_zoo.zoo.update_index import MAX_EMBED_FILE_BYTES

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no tracked files to check")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tracked = [REPO / name for name in listed.decode().split("\0") if name]
    over = [f"{p.relative_to(REPO).as_posix()} ({p.stat().st_size} bytes)" for p in tracked
            if p.is_file() and p.stat().st_size > MAX_EMBED_FILE_BYTES]
    assert not over, f"over the {MAX_EMBED_FILE_BYTES}-byte limit: {', '.join(over)}"
    assert len(tracked) > 100


def test_a_version_1_run_folder_loads_and_publishes_as_version_2(trained_run, tmp_path, hf_env):
    """An old run folder (a top-level "refcal" block with an absolute dataset path) loads through the v1 reader, and
    publishing it writes a version-2 record and no machine path."""
    from refcal_zoo.hub import publish_run
    from refcal_zoo.record import RunRecord, read_record

    old = copy_folder(trained_run, tmp_path / "v1run")
    cfg = json.loads((old / "config.json").read_text())
    new = cfg.pop("run_record")
    ds = new["dataset"]
    cfg["refcal"] = {
        "name": new["name"], "version": "0.1.0.dev0", "method": new["method"],
        "dataset": {"path": "/home/someone/data/cifar10", "config": None, "image_column": "img",
                    "label_column": "label", "rho": ds["rho"], "lt_seed": ds["lt_seed"], "n_max": ds["n_max"],
                    "train_counts": ds["train_counts"], "val_counts": ds["val_counts"],
                    "train_sha256": ds["train_sha256"], "val_sha256": ds["val_sha256"], "test_split": "test"},
        "training": {"epochs": 1, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "seed": 1234,
                     "train_seconds": 1.5, "train_images_per_second": 280.0},
        "temperature": new["temperature"], "metrics": new["metrics"], "selection": new["selection"]}
    (old / "config.json").write_text(json.dumps(cfg))
    lt = json.loads((old / "lt_indices.json").read_text())
    lt["source"]["path"] = "/home/someone/data/cifar10"
    (old / "lt_indices.json").write_text(json.dumps(lt))
    tc = yaml.safe_load((old / "config.yaml").read_text())
    tc["dataset"]["path"], tc["output_dir"] = "/home/someone/data/cifar10", "/home/someone/runs/x"
    (old / "config.yaml").write_text(yaml.safe_dump(tc))

    record = read_record(cfg, lt=lt)
    assert isinstance(record, RunRecord) and record.provenance.migrated_from == 1
    assert (record.dataset.id, record.dataset.kind) == ("cifar10", "local")
    assert record.temperature == new["temperature"] and record.budget.train_seconds == 1.5
    loaded = refcal_zoo.load(old)
    assert loaded.record.dataset.id == "cifar10" and float(loaded.temperature) == pytest.approx(new["temperature"])
    out = publish_run(old, tmp_path / "pub")
    published = json.loads((out / "config.json").read_text())
    assert "refcal" not in published and published["run_record"]["version"] == 2
    for f in out.iterdir():
        if f.suffix in (".json", ".yaml", ".md", ".jsonl"):
            assert "/home/someone" not in f.read_text(), f.name
    assert yaml.safe_load((out / "train_config.yaml").read_text())["dataset"]["path"] == "cifar10"
    assert "a local dataset folder named `cifar10`" in (out / "README.md").read_text()


def _run_that_read(run, identity: tuple[str, str], source_path: str, config_path: str, export: dict | None = None):
    """Rewrite a run folder as if it had read ``config_path`` (its config), drawn from ``source_path`` (its split
    record, with ``export`` when an export stood in), recorded as ``identity`` = (id, kind)."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["run_record"]["dataset"].update(id=identity[0], kind=identity[1])
    (run / "config.json").write_text(json.dumps(cfg))
    lt = json.loads((run / "lt_indices.json").read_text())
    lt["source"]["path"] = source_path
    if export is not None:
        lt["source"]["export"] = export
    (run / "lt_indices.json").write_text(json.dumps(lt))
    tc = yaml.safe_load((run / "config.yaml").read_text())
    tc["dataset"]["path"] = config_path
    (run / "config.yaml").write_text(yaml.safe_dump(tc))
    return run


def test_a_relative_local_path_that_looks_like_a_hub_id_is_published_by_folder_name(trained_run, tmp_path, hf_env):
    """A run that read ``data/cifar10`` (relative, so shaped like ``org/name``) from a folder: its record says
    local, so the published train config and split record name the folder, never the path or a fake Hub id;
    a Hub id read from the Hub is kept as it is."""
    from refcal_zoo.hub import publish_run

    for path, kind, expected in (("data/cifar10", "local", "cifar10"), ("uoft-cs/cifar10", "hub", "uoft-cs/cifar10")):
        run = _run_that_read(copy_folder(trained_run, tmp_path / kind / "run"), (expected, kind), path, path)
        out = publish_run(run, tmp_path / kind / "pub")
        assert yaml.safe_load((out / "train_config.yaml").read_text())["dataset"]["path"] == expected, kind
        assert json.loads((out / "lt_indices.json").read_text())["source"]["path"] == expected, kind


def test_a_run_on_a_relative_export_publishes_the_exports_folder_name(trained_run, tmp_path, hf_env):
    """A run that read an export of a Hub dataset from the relative folder ``device_data/cifar10-lt`` (the GPU
    scripts' layout): the export is a folder, so the published train config and the split record's export name the
    folder, never a fake Hub id ``device_data/cifar10-lt``; the source keeps its Hub id."""
    from refcal_zoo.hub import publish_run

    run = _run_that_read(copy_folder(trained_run, tmp_path / "run"), ("uoft-cs/cifar10", "hub"), "uoft-cs/cifar10",
                         "device_data/cifar10-lt", export={"folder": "cifar10-lt", "path": "device_data/cifar10-lt"})
    out = publish_run(run, tmp_path / "pub")
    assert yaml.safe_load((out / "train_config.yaml").read_text())["dataset"]["path"] == "cifar10-lt"
    source = json.loads((out / "lt_indices.json").read_text())["source"]
    assert (source["path"], source["export"]["path"]) == ("uoft-cs/cifar10", "cifar10-lt")


def test_cards_of_shipped_entries_show_only_working_usage_lines_and_are_current():
    """Each shipped card has only usage lines that work offline, is the card today's code renders from its folder
    (a change to the card code re-renders them: ``migrate_folder``; compared as body text and parsed metadata, so a
    newer huggingface_hub's YAML layout is no failure), and is the copy in ``model_cards/``."""
    from huggingface_hub import ModelCard

    from refcal_zoo.hub import build_model_card

    for name, entry in load_index(INDEX_PATH).items():
        folder = INDEX_PATH.parent / "weights" / name
        if not folder.is_dir():
            continue
        text = (folder / "README.md").read_text()
        fresh, shipped = build_model_card(folder, zoo_name=name, timm_tag=entry.timm_tag), ModelCard(text)
        assert (fresh.text, fresh.data.to_dict()) == (shipped.text, shipped.data.to_dict()), name
        assert f'refcal_zoo.load("{name}")' in text and f'timm.create_model("{entry.timm_tag}"' in text, name
        assert "hf-hub:" not in text, name  # nothing has been pushed
        assert (REPO / "model_cards" / name / "README.md").read_text() == text, name


def test_hub_and_zoo_import_one_way():
    """refcal_zoo.hub never imports refcal_zoo.zoo; the engine, the models and the weight-file reader (which the
    models' timm hook uses) import neither (module-level or inside functions)."""
    import ast

    pkg = REPO / "refcal_zoo"

    def imported(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    for path in (pkg / "hub").glob("*.py"):
        assert not [n for n in imported(path) if "zoo" in n.split(".") and n != "refcal_zoo"], path
    below_publishing = [*(pkg / "engine").glob("*.py"), *(pkg / "models").glob("*.py"), pkg / "weight_files.py"]
    for path in below_publishing:
        assert not [n for n in imported(path) if {"hub", "zoo"} & set(n.split("."))], path
    assert not [n for n in imported(pkg / "record.py") if n not in ("__future__", "math", "re", "dataclasses",
                                                                     "pathlib", "typing", ".errors")]


# ---------------------------------------------------------------------------------- unpublished and reduced entries


def test_unpublished_entry_of_a_build_suite_names_the_one_command_that_builds_it(hf_env, no_network):
    from refcal_zoo.hub import NotAvailableError

    entry = get_entry("resnet32-cifar100lt-refcal")
    assert entry.status == "recipe-only" and entry.build == "cifar100lt-full"
    command = "python benchmarks/build_zoo.py --suite cifar100lt-full --entries resnet32-cifar100lt-refcal"
    with pytest.raises(NotAvailableError) as info:
        refcal_zoo.load("resnet32-cifar100lt-refcal")
    message = str(info.value)
    assert "not yet published" in message and f"`{command}`" in message and message.count("`") == 2  # one command
    assert "uoft-cs/cifar100" in message and "GPU" in message
    other = get_entry("resnet32-cifar100lt-ldam_drw")  # no build suite covers it: the recipe's train command
    assert other.build is None
    with pytest.raises(NotAvailableError, match="has no published weights yet.*accelerate launch recipes/train.py"):
        refcal_zoo.load(other.name)


def test_index_build_field_is_checked_and_round_trips(tmp_path, monkeypatch):
    entries = load_index(INDEX_PATH)
    raw = yaml.safe_load(INDEX_PATH.read_text())["models"]
    assert raw["resnet32-cifar100lt-ce"]["build"] == "cifar100lt-full" and "build" not in raw["resnet8-digitslt-ce"]
    assert entries["resnet8-digitslt-ce"].build is None and entries["resnet8-digitslt-ce"].build_command is None
    bad = dict(raw["resnet32-cifar100lt-ce"], build="rm -rf /")
    path = tmp_path / "index.yaml"
    path.write_text(yaml.safe_dump({"format": 1, "models": {"resnet32-cifar100lt-ce": bad}}))
    with pytest.raises(ResolveError, match="has build 'rm -rf /'; name a suite of benchmarks/build_zoo.py"):
        load_index(path)


@pytest.mark.parametrize("method", ["ce", "refcal_joint"])
def test_reduced_budget_entries_carry_their_budget_in_the_name(method, hf_env, no_network):
    """The 5-epoch ResNet-20 entries are retired from the plain names and ship as `<...>_e5`."""
    old, new = f"resnet20-cifar10lt-{method}", f"resnet20-cifar10lt-{method}_e5"
    index = load_index(INDEX_PATH)
    assert old not in index and new in index and index[new].published
    assert "Reduced budget: 5 epochs" in index[new].notes and f"name={new}" in index[new].overrides
    assert not (INDEX_PATH.parent / "weights" / old).exists() and not (REPO / "model_cards" / old).exists()
    model = refcal_zoo.load(new)
    assert model.zoo_info["source"] == "embedded" and model.zoo_info["name"] == new
    assert model.zoo_info["timm_tag"] == f"resnet20_cifar.{method}_e5_cifar10lt" == index[new].timm_tag
    for card in (INDEX_PATH.parent / "weights" / new / "README.md", REPO / "model_cards" / new / "README.md"):
        text = card.read_text()
        assert f"# {new}\n" in text and f'refcal_zoo.load("{new}")' in text and old + '"' not in text
        assert f'timm.create_model("resnet20_cifar.{method}_e5_cifar10lt"' in text
    with pytest.raises(ResolveError, match=f"unknown zoo model '{old}'.*{new}"):
        refcal_zoo.load(old)


def test_a_tensor_over_the_file_limit_is_cut_into_parts_that_load_back_exactly(published, hf_env, no_network, tmp_path,
                                                                                monkeypatch):
    """A limit below the largest tensor (the 147 KB conv weight of the session model): that tensor is cut into
    parts along its first dimension, every shard stays under the limit, and ``refcal_zoo.load`` and the timm tag
    give the one-file model's exact outputs; parts missing or stray are refused."""
    import timm
    from safetensors.torch import load_file

    from refcal_zoo import weight_files as shards
    from refcal_zoo.zoo import update_index
    from refcal_zoo.zoo.tags import register_timm_tags

    original = load_file(published / "model.safetensors")
    largest = max(t.numel() * t.element_size() for t in original.values())
    limit = 100_000
    assert largest > limit
    monkeypatch.setattr(update_index, "MAX_EMBED_FILE_BYTES", limit)
    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    entry = register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    assert all((shipped / s).stat().st_size <= limit for s in entry.shards)
    stored = {k: v for s in entry.shards for k, v in load_file(shipped / s).items()}
    assert any("#part" in k for k in stored) and all(t.numel() * t.element_size() <= limit for t in stored.values())
    back, header = shards.load_shards(shipped, entry.shards)
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
    assert all(header[k]["shape"] == list(original[k].shape) for k in original)

    x = torch.rand(4, 3, 32, 32)
    reference = refcal_zoo.ZooModel.from_pretrained(published)
    with torch.no_grad():
        assert torch.equal(refcal_zoo.load(ZOO_NAME)(x), reference(x))
        try:
            register_timm_tags()
            assert torch.equal(timm.create_model(entry.timm_tag, pretrained=True).eval()(x), reference.model(x))
        finally:
            monkeypatch.delenv("REFCAL_ZOO_INDEX")
            register_timm_tags()

    t = torch.arange(6.0).reshape(3, 2)
    for bad, match in (({"w#part1of3": t[:1], "w#part3of3": t[2:]}, r"holds parts \[1, 3\] of 'w' where 3"),
                       ({"w#part1of2": t[:1], "w#part2of3": t[1:]}, "no part of a cut tensor"),
                       ({"w#x": t}, "no part of a cut tensor")):
        with pytest.raises(IntegrityError, match=match):
            shards._join_parts(dict(bad), {}, tmp_path / "index")


def test_weights_over_the_file_limit_ship_as_pinned_shards(published, hf_env, no_network, tmp_path, monkeypatch):
    """Weights over the package's per-file limit ship as Hugging Face shards (each under the limit, each sha256
    pinned in the index): ``refcal_zoo.load`` and the timm tag give the one-file model's exact outputs, and a
    changed shard is refused."""
    import timm
    from safetensors.torch import load_file

    from refcal_zoo.weight_files import SHARD_INDEX
    from refcal_zoo.zoo import update_index
    from refcal_zoo.zoo.tags import register_timm_tags

    size = (published / "model.safetensors").stat().st_size
    limit = int(size * 0.6)
    monkeypatch.setattr(update_index, "MAX_EMBED_FILE_BYTES", limit)
    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    entry = register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    assert len(entry.shards) >= 2 and load_index(index)[ZOO_NAME].shards == entry.shards
    assert not (shipped / "model.safetensors").exists() and (shipped / SHARD_INDEX).is_file()
    assert all((shipped / s).stat().st_size <= limit for s in entry.shards)
    merged = {k: v for s in entry.shards for k, v in load_file(shipped / s).items()}
    original = load_file(published / "model.safetensors")
    assert merged.keys() == original.keys() and all(torch.equal(merged[k], original[k]) for k in original)

    x = torch.rand(4, 3, 32, 32)
    reference = refcal_zoo.ZooModel.from_pretrained(published)
    model = refcal_zoo.load(ZOO_NAME)
    assert model.zoo_info["source"] == "embedded" and model.zoo_info["sha256"] == entry.sha256
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        try:
            register_timm_tags()  # the tag of the index in use: timm reads the shards through custom_load
            raw = timm.create_model(entry.timm_tag, pretrained=True).eval()
            assert torch.equal(raw(x), reference.model(x))
        finally:
            monkeypatch.delenv("REFCAL_ZOO_INDEX")
            register_timm_tags()

    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(index))
    by_path = refcal_zoo.load(shipped)  # the shipped folder by its path: checked against the index's pins too
    assert by_path.zoo_info["source"] == "embedded" and by_path.zoo_info["sha256"] == entry.sha256
    shard = shipped / sorted(entry.shards)[-1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one bit of one tensor
    shard.write_bytes(bytes(data))
    for spec in (ZOO_NAME, shipped):
        with pytest.raises(IntegrityError, match=r"sha256 of .*model-0000.-of-0000.\.safetensors.* zoo index pins"):
            refcal_zoo.load(spec)


def test_a_sharded_shipped_folder_migrates_in_place_and_still_loads(published, hf_env, no_network, tmp_path,
                                                                    monkeypatch):
    """``migrate_folder`` re-renders a sharded shipped folder (the way shipped cards are re-rendered): the shards
    and the record's one-file sha256 stay as they were, the card is the one ``register`` wrote, and the entry
    still loads against the index's pins; a folder with a shard missing is refused before anything is written."""
    from refcal_zoo.hub.publish import migrate_folder
    from refcal_zoo.zoo import update_index

    monkeypatch.setattr(update_index, "MAX_EMBED_FILE_BYTES",
                        int((published / "model.safetensors").stat().st_size * 0.6))
    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    entry = register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    migrate_folder(shipped, zoo_name=ZOO_NAME, timm_tag=entry.timm_tag)
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    record = json.loads((shipped / "config.json").read_text())["run_record"]
    assert record["provenance"]["weights_sha256"] == entry.sha256
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(refcal_zoo.load(ZOO_NAME)(x), refcal_zoo.ZooModel.from_pretrained(published)(x))

    (shipped / sorted(entry.shards)[0]).unlink()
    with pytest.raises(IntegrityError, match=r"model-00001-of-0000\d\.safetensors' is missing"):
        migrate_folder(shipped, zoo_name=ZOO_NAME)
    assert sorted(p.name for p in shipped.iterdir()) == sorted(set(before) - {sorted(entry.shards)[0]})
