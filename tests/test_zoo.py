"""The zoo index: entries match their recipes, listing, org/env handling, registering a published folder."""


from __future__ import annotations

import json
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
    assert entry.sha256 == cfg["refcal"]["weights_sha256"]
    assert entry.metrics["accuracy"] == metrics["accuracy"] and entry.metrics["ts/ece"] == metrics["ts/ece"]
    assert entry.temperature == cfg["refcal"]["temperature"]
    after = load_index(index)
    assert after[ZOO_NAME].published and after[ZOO_NAME].sha256 == entry.sha256
    assert {n: e.to_dict() for n, e in after.items() if n != ZOO_NAME} == \
        {n: e.to_dict() for n, e in before.items() if n != ZOO_NAME}  # nothing else changed
    assert index.read_text().startswith("# refcal_zoo model index")
    assert (index.parent / "weights" / ZOO_NAME / "model.safetensors").is_file()
    model = refcal_zoo.load(ZOO_NAME)  # offline, no sockets: from the shipped weights, sha-checked
    assert model.zoo_info["source"] == "embedded" and model.zoo_info["revision"] == "v1.0"
    assert refcal_zoo.list_models(status="published") == [ZOO_NAME]


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
    absent): its test accuracy equals the index's."""
    from .conftest import SHARED_CIFAR10

    if not SHARED_CIFAR10.is_dir():
        pytest.skip("shared CIFAR-10 copy (../shared/datasets/cifar10) absent")
    from refcal_zoo.data import load_image_splits

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
        assert accuracy == pytest.approx(entry.metrics["accuracy"], abs=1e-12), name
