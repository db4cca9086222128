"""refcal_zoo.load / save_pretrained / model cards / timm interop, all offline (seeded HF cache, no sockets)."""


from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import ModelCard

import refcal_zoo
from refcal_zoo.data import load_image_splits
from refcal_zoo.hub import (
    IntegrityError,
    NotAvailableError,
    PublishError,
    ResolveError,
    card_metrics,
    publish_run,
    push_folder,
)
from refcal_zoo.hub.card import CARD_METRICS
from refcal_zoo.zoo import ZooModel

from .conftest import REPO, REPO_ID, ZOO_NAME, copy_folder, publish_entry, seed_hf_cache, tree_digest, write_index

X = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def digits_test():
    data = load_image_splits("digits", ["test"])
    return data.images["test"], data.labels["test"]


# --------------------------------------------------------------------------------------------------- round trip


def test_round_trip_train_publish_load_gives_identical_logits(trained_run, published):
    run = refcal_zoo.load(trained_run, calibrated=False)
    pub = refcal_zoo.load(published, calibrated=False)
    pub_cal = refcal_zoo.load(published)
    plain = timm.create_model(f"local-dir:{trained_run}", pretrained=True).eval()
    with torch.no_grad():
        raw = plain(X)
        assert torch.equal(run(X), raw)
        assert torch.equal(pub(X), raw)
        assert torch.equal(pub_cal.model(X), raw)  # the raw model stays reachable
        assert torch.equal(pub_cal(X), raw / pub_cal.temperature)
    temperature = json.loads((trained_run / "temperature.json").read_text())["temperature"]
    assert float(pub_cal.temperature) == pytest.approx(temperature, rel=1e-6)
    assert pub_cal.zoo_info["temperature"] == temperature
    assert not pub_cal.training and not pub_cal.model.training
    assert pub_cal.pretrained_cfg["mean"] == json.loads((trained_run / "config.json").read_text())[
        "pretrained_cfg"]["mean"]
    assert tuple(pub_cal.pretrained_cfg["input_size"]) == (3, 32, 32)
    assert pub_cal.zoo_info["method"]["name"] == "refcal_joint" and pub_cal.zoo_info["dataset"]["id"] == "digits"
    run_metrics, pub_metrics = json.loads((trained_run / "metrics.json").read_text()), pub_cal.zoo_info["metrics"]
    assert {k: pub_metrics[k] for k in run_metrics} == run_metrics  # + the frequency thirds publishing adds
    assert {k.removeprefix("ts/").split("/")[0] for k in set(pub_metrics) - set(run_metrics)} == {"head", "mid", "tail"}


def test_published_folder_layout_and_pins(trained_run, published):
    names = {p.name for p in published.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "reliability.png", "reliability_ts.png", "metrics.json",
            "temperature.json", "train_config.yaml", "lt_indices.json", "train_log.jsonl"} <= names
    assert not any(n.startswith(".") for n in names)
    assert (published / "model.safetensors").read_bytes() == (trained_run / "model.safetensors").read_bytes()
    cfg = json.loads((published / "config.json").read_text())
    import hashlib

    record = cfg["run_record"]
    assert record["provenance"]["weights_sha256"] == hashlib.sha256(
        (published / "model.safetensors").read_bytes()).hexdigest()
    assert "refcal" not in cfg and record["version"] == 2
    assert set(cfg["pretrained_cfg"]) <= set(json.loads((trained_run / "config.json").read_text())["pretrained_cfg"])
    lt = json.loads((published / "lt_indices.json").read_text())
    assert record["dataset"]["train_sha256"] == lt["train_sha256"]


def test_predict_proba_reproduces_the_run_metrics(published, digits_test):
    images, labels = digits_test
    metrics = json.loads((published / "metrics.json").read_text())
    model = refcal_zoo.load(published)
    probs = model.predict_proba(images)
    assert probs.shape == (len(labels), 10) and torch.allclose(probs.sum(1), torch.ones(len(labels)), atol=1e-5)
    assert (probs.argmax(1) == labels).double().mean().item() == pytest.approx(metrics["accuracy"], abs=1e-12)
    nll = torch.nn.functional.nll_loss(probs.double().clamp_min(1e-300).log(), labels).item()
    assert nll == pytest.approx(metrics["ts/nll"], rel=1e-4)
    raw = refcal_zoo.predict_proba(refcal_zoo.load(published, calibrated=False), images)
    raw_nll = torch.nn.functional.nll_loss(raw.double().clamp_min(1e-300).log(), labels).item()
    assert raw_nll == pytest.approx(metrics["nll"], rel=1e-4)


def test_predict_proba_accepts_uint8_float_single_pil_and_resizes(published, digits_test):
    from PIL import Image

    model = refcal_zoo.load(published)
    images = digits_test[0][:4]
    ref = model.predict_proba(images)
    assert torch.allclose(model.predict_proba(images.float() / 255), ref, atol=1e-6)
    assert torch.allclose(model.predict_proba(images[0]), ref[:1], atol=1e-6)
    pils = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    assert torch.allclose(model.predict_proba(pils), ref, atol=1e-6)
    assert torch.allclose(model.predict_proba(pils[0]), ref[:1], atol=1e-6)
    assert torch.allclose(model.predict_proba(images.numpy()), ref, atol=1e-6)
    big = torch.nn.functional.interpolate(images.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    out = model.predict_proba(big)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=0.1)  # resized back to 32x32
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.predict_proba(images.float())
    with pytest.raises(ValueError, match="channels first"):
        model.predict_proba(images.permute(0, 2, 3, 1))


def test_save_pretrained_from_a_loaded_model_round_trips(published, tmp_path):
    model = refcal_zoo.load(published)
    out = model.save_pretrained(tmp_path / "again")
    again = refcal_zoo.load(out)
    with torch.no_grad():
        assert torch.equal(again(X), model(X))
    assert float(again.temperature) == float(model.temperature)
    assert card_metrics(out / "README.md") == card_metrics(published / "README.md")


def test_save_pretrained_of_a_plain_timm_model(tmp_path):
    model = timm.create_model("resnet8_cifar", num_classes=10).eval()
    out = ZooModel(model).save_pretrained(tmp_path / "plain")
    assert {p.name for p in out.iterdir()} == {"README.md", "config.json", "model.safetensors"}
    loaded = refcal_zoo.load(out, device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))  # no temperature: T = 1
    assert float(loaded.temperature) == 1.0 and loaded.zoo_info["name"] == "plain"
    card = ModelCard.load(out / "README.md")
    assert not card.data.eval_results and "without a refcal_zoo training record" in card.text


# --------------------------------------------------------------------------------------------------- model card


def test_card_round_trip_matches_metrics_json(published):
    metrics = json.loads((published / "metrics.json").read_text())
    card = ModelCard.load(published / "README.md")
    expected = {p + k: metrics[p + k] for p in ("", "ts/") for k in CARD_METRICS if metrics.get(p + k) is not None}
    assert card_metrics(card) == expected
    assert len(expected) >= 2 * (len(CARD_METRICS) - 2)
    data = card.data
    assert data.library_name == "refcal_zoo" and data.license == "apache-2.0"
    assert {"image-classification", "calibration", "long-tail", "timm", "safetensors"} <= set(data.tags)
    assert data.eval_results[0].dataset_split == "test"
    ece = next(r for r in data.eval_results if r.metric_type == "ece" and r.metric_config == "raw")
    assert ece.metric_args["num_bins"] == 15


def test_card_body_numbers_come_from_the_run(trained_run, published):
    text = (published / "README.md").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    refcal = json.loads((trained_run / "config.json").read_text())["run_record"]
    temperature = json.loads((trained_run / "temperature.json").read_text())
    for needle in (f"{metrics['accuracy']:.4f}", f"{metrics['ts/ece']:.4f}", f"T = {temperature['temperature']:.4f}",
                   f"{refcal['budget']['train_seconds']} s", f"epochs {refcal['budget']['epochs']} x",
                   refcal["dataset"]["train_sha256"], refcal["dataset"]["val_sha256"], "![", "reliability.png",
                   "| many |", "| few |", f"rho={refcal['dataset']['rho']:g}", "refcal_zoo.load(", "## Limitations",
                   "equal-width `(lo, hi]`", "Misclassification AUROC"):
        assert needle in text, needle
    assert f"{metrics['many/accuracy']:.4f}" in text


def test_card_of_a_two_stage_run_reports_each_stage_and_the_selected_epoch(trained_run, tmp_path):
    """Budget per stage from log.jsonl and the published (selected) epoch, on an edited copy of the session run."""
    import yaml

    from refcal_zoo.hub import build_model_card

    run = copy_folder(trained_run, tmp_path / "two_stage")
    log = [{"stage": "contrastive", "epoch": e, "train_loss": 5.0} for e in (1, 2, 3)]
    log += [{"stage": "classifier", "epoch": e, "train_loss": 1.0, "train_accuracy": 0.5 + e / 100,
             "val_accuracy": 0.4 + e / 100, "val_nll": 2.0 - e / 10, "val_ts_nll": 1.5 - e / 10} for e in (1, 2)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"]["name"] = "refcal"
    cfg["stage2"] = dict(cfg["train"], batch_size=100, optimizer="sgd", lr=5.0, augment="rrc_flip")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = json.loads((run / "config.json").read_text())
    config["run_record"]["method"]["name"] = "refcal"
    config["run_record"]["selection"] = {"rule": "best_nll", "epoch": 1}
    (run / "config.json").write_text(json.dumps(config))
    text = build_model_card(run).text
    n = sum(config["run_record"]["dataset"]["train_counts"])
    b1 = cfg["train"]["batch_size"]
    assert f"Budget of stage `contrastive` (logged): epochs 3 x {n // b1 * b1:,} training images" in text
    assert f"Budget of stage `classifier` (logged): epochs 2 x {n // 100 * 100:,} training images" in text
    assert "two-stage RefCal" in text and "Stage 2 optimiser" in text
    assert "Published weights: epoch 1 of stage `classifier`, selected by `best_nll`" in text
    assert "validation NLL 1.9000, after temperature scaling 1.4000)" in text


def test_card_of_a_run_that_moved_gives_each_devices_own_throughput(trained_run, tmp_path):
    """A run that trained on two machines: the card gives each device's images/s from its logged epochs (hand
    computation: equal images per epoch, so each stretch's speed is the harmonic mean of its epochs'), beside the whole
    run's average, which credits neither; where the log does not cover the stretches it keeps the one figure."""
    from refcal_zoo.hub import build_model_card

    run = copy_folder(trained_run, tmp_path / "moved")
    speeds = [100.0, 300.0, 2000.0, 3000.0, 6000.0]
    (run / "log.jsonl").write_text("".join(json.dumps({"step": e, "stage": "train", "epoch": e, "train_loss": 1.0,
                                                       "images_per_second": ips}) + "\n"
                                           for e, ips in enumerate(speeds, start=1)))
    config = json.loads((run / "config.json").read_text())
    budget = config["run_record"]["budget"]
    budget.update(device="CPU, 2 threads, fp32 (epochs 1-2) and Lent GPU, bf16 (epochs 3-5)", train_seconds=12.5,
                  train_images_per_second=321.0)
    (run / "config.json").write_text(json.dumps(config))
    line = next(ln for ln in build_model_card(run).text.splitlines() if "Wall-clock" in ln)
    assert line == ("- Wall-clock training time: 12.5 s at 321.0 images/s over the whole run (training loop only; "
                    "evaluation and temperature fitting excluded); by device: CPU, 2 threads, fp32 (epochs 1-2) at "
                    "150.0 images/s; Lent GPU, bf16 (epochs 3-5) at 3,000.0 images/s.")
    budget["device"] = "CPU, 2 threads, fp32 (epochs 1-2) and Lent GPU, bf16 (epochs 3-6)"  # epoch 6 not logged
    (run / "config.json").write_text(json.dumps(config))
    line = next(ln for ln in build_model_card(run).text.splitlines() if "Wall-clock" in ln)
    assert line.startswith(f"- Wall-clock training time: 12.5 s on {budget['device']} at 321.0 images/s (")


# --------------------------------------------------------------------------------------------------- offline Hub


def test_offline_load_from_seeded_hf_cache_with_network_disabled(published, hf_env, no_network, tmp_path,
                                                                  monkeypatch):
    seed_hf_cache(hf_env, REPO_ID, published)
    write_index(tmp_path / "zoo", {ZOO_NAME: publish_entry(published)}, monkeypatch=monkeypatch)
    model = refcal_zoo.load(ZOO_NAME)
    assert model.zoo_info["source"] == "hf-cache" and str(hf_env) in model.zoo_info["folder"]
    ref = refcal_zoo.load(published)
    with torch.no_grad():
        assert torch.equal(model(X), ref(X))
    by_id = refcal_zoo.load(f"hf-hub:{REPO_ID}")
    assert by_id.zoo_info["source"] == "hf-hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # still no socket: the cache comes first
    assert refcal_zoo.load(ZOO_NAME).zoo_info["source"] == "hf-cache"


def test_timm_hf_hub_and_local_dir_interop(published, hf_env, no_network):
    seed_hf_cache(hf_env, REPO_ID, published)
    ref = refcal_zoo.load(published, calibrated=False)
    via_hub = timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True).eval()
    via_dir = timm.create_model(f"local-dir:{published}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(via_hub(X), ref(X)) and torch.equal(via_dir(X), ref(X))
    assert via_hub.pretrained_cfg["mean"] == ref.pretrained_cfg["mean"]


def test_shipped_weights_come_before_the_hf_cache(published, hf_env, no_network, tmp_path, monkeypatch):
    seed_hf_cache(hf_env, REPO_ID, published)
    index = write_index(tmp_path / "zoo", {ZOO_NAME: publish_entry(published)}, monkeypatch=monkeypatch)
    assert refcal_zoo.load(ZOO_NAME).zoo_info["source"] == "hf-cache"
    copy_folder(published, index.parent / "weights" / ZOO_NAME)
    assert refcal_zoo.load(ZOO_NAME).zoo_info["source"] == "embedded"


def test_recipe_only_entry_explains_how_to_train(hf_env):
    from refcal_zoo.zoo import get_entry

    entry = get_entry("resnet32-cifar100lt-ldam_drw")
    assert entry.status == "recipe-only"
    with pytest.raises(NotAvailableError) as info:
        refcal_zoo.load("resnet32-cifar100lt-ldam_drw")
    assert entry.train_command in str(info.value) and "no published weights" in str(info.value)


def test_offline_and_not_cached_says_how_to_get_it(published, hf_env, no_network, tmp_path, monkeypatch):
    write_index(tmp_path / "zoo", {ZOO_NAME: publish_entry(published)}, monkeypatch=monkeypatch)
    with pytest.raises(NotAvailableError) as info:
        refcal_zoo.load(ZOO_NAME)
    msg = str(info.value)
    for needle in ("HF_HUB_OFFLINE", "hf download", REPO_ID,
                   "accelerate launch recipes/train.py --config recipes/configs/default.yaml"):
        assert needle in msg, needle
    with pytest.raises(NotAvailableError, match="HF_HUB_OFFLINE"):
        refcal_zoo.load("hf-hub:someone/not-cached")


# --------------------------------------------------------------------------------------------------- bad input


def test_unknown_zoo_name_lists_close_matches():
    with pytest.raises(ResolveError) as info:
        refcal_zoo.load("resnet32-cifar100-refcal")
    assert "unknown zoo model" in str(info.value) and "resnet32-cifar100lt-refcal" in str(info.value)


def test_sha256_mismatch_against_the_index_is_refused(published, hf_env, no_network, tmp_path, monkeypatch):
    seed_hf_cache(hf_env, REPO_ID, published)
    write_index(tmp_path / "zoo", {ZOO_NAME: publish_entry(published, sha256="0" * 64)}, monkeypatch=monkeypatch)
    with pytest.raises(IntegrityError) as info:
        refcal_zoo.load(ZOO_NAME)
    assert "model.safetensors" in str(info.value) and "0" * 64 in str(info.value)


def test_replaced_weights_fail_the_config_sha256(published, tmp_path):
    bad = copy_folder(published, tmp_path / "bad")
    weights = bad / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # same length: only the hash can tell
    weights.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=r"sha256 of '.*bad/model\.safetensors'"):
        refcal_zoo.load(bad)


@pytest.mark.parametrize("which", ["published", "run"])
def test_truncated_safetensors_is_refused_and_named(published, trained_run, tmp_path, which):
    src = published if which == "published" else trained_run
    bad = copy_folder(src, tmp_path / "trunc")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(IntegrityError, match=r"trunc/model\.safetensors' is truncated"):
        refcal_zoo.load(bad)


def test_class_count_mismatch_is_refused(published, tmp_path):
    bad = copy_folder(published, tmp_path / "k100")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 100
    cfg["label_names"] = cfg["pretrained_cfg"]["label_names"] = [str(k) for k in range(100)]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IntegrityError, match="num_classes=100 but .* holds a 10-class classifier"):
        refcal_zoo.load(bad)
    cfg["label_names"] = ["a", "b"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IntegrityError, match="2 label_names"):
        refcal_zoo.load(bad)


def test_pickle_only_folder_is_refused(published, tmp_path):
    bad = copy_folder(published, tmp_path / "pkl")
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(IntegrityError, match="pytorch_model.bin.*safetensors only"):
        refcal_zoo.load(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hf-hub:no-slash", "not a Hub repo id"),
        ("hf-hub:org/../etc", "not a Hub repo id"),
        ("hf-hub:a/b/c", "not a Hub repo id"),
        ("hf-hub:org/name@v1", "not in the Hugging Face cache"),
        ("someorg/somemodel", "for a Hub repo write 'hf-hub:someorg/somemodel'"),
        ("./no/such/folder", "does not exist"),
        ("local-dir:/no/such/folder", "does not exist"),
        ("bad name!", "not a valid zoo model name"),
    ],
)
def test_bad_specs_are_refused(hf_env, no_network, spec, message):
    with pytest.raises((ResolveError, NotAvailableError), match=message):
        refcal_zoo.load(spec)


def test_dotdot_tricks_are_refused(published, tmp_path, monkeypatch, hf_env):
    tricky = f"{published}/../{published.name}"
    with pytest.raises(ResolveError, match=r"goes back up with '\.\.'"):
        refcal_zoo.load(tricky)
    monkeypatch.chdir(published.parent)
    assert isinstance(refcal_zoo.load(f"./{published.name}"), ZooModel)  # plain relative paths are fine
    with pytest.raises(ResolveError, match=r"'\.\.'"):
        refcal_zoo.load(published).save_pretrained(f"{tmp_path}/x/../../y")


def test_publish_run_refuses_unsafe_targets(trained_run, published, tmp_path):
    with pytest.raises(PublishError, match="must differ from the run folder"):
        publish_run(trained_run, trained_run)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(PublishError, match="not empty and is not a published folder"):
        publish_run(trained_run, other)
    assert (other / "notes.txt").read_text() == "keep me"
    unfinished = copy_folder(trained_run, tmp_path / "unfinished")
    (unfinished / "metrics.json").unlink()
    with pytest.raises(PublishError, match="not a finished run folder"):
        publish_run(unfinished, tmp_path / "pub")
    again = publish_run(published, tmp_path / "republished", repo_id=REPO_ID)  # a published folder: ok
    assert {p.name for p in again.iterdir()} == {p.name for p in published.iterdir()}
    for name in ("README.md", "config.json", "model.safetensors", "train_config.yaml", "train_log.jsonl"):
        assert (again / name).read_bytes() == (published / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


# --------------------------------------------------------------------------------------------------- push


class FakeHfApi:
    """Records calls (and the README it would upload); never talks to the network."""

    calls: list = []

    def __init__(self, **kwargs):
        FakeHfApi.calls.append(("init", kwargs))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        from pathlib import Path

        folder = Path(kwargs["folder_path"])
        kwargs["files"] = sorted(p.name for p in folder.iterdir())
        kwargs["readme"] = (folder / "README.md").read_text()
        FakeHfApi.calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"oid": "f" * 40, "commit_url": "https://example/commit"})()


@pytest.fixture
def fake_api(monkeypatch, hf_env):
    FakeHfApi.calls = []
    monkeypatch.setattr("refcal_zoo.hub.publish.HfApi", FakeHfApi)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return FakeHfApi


def test_push_folder_mocked_hfapi_checks_call_arguments_only(published, fake_api, no_network):
    before = tree_digest(published)
    info = push_folder(published, "my-org/my-model", token="hf_test", private=True)
    assert info.oid == "f" * 40
    kinds = [c[0] for c in fake_api.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert fake_api.calls[0][1]["token"] == "hf_test" and fake_api.calls[0][1]["library_name"] == "refcal_zoo"
    assert fake_api.calls[1][1:] == ("my-org/my-model", {"private": True, "exist_ok": True, "repo_type": "model"})
    upload = fake_api.calls[2][1]
    assert upload["repo_id"] == "my-org/my-model" and upload["files"] == sorted(p.name for p in published.iterdir())
    assert upload["repo_type"] == "model" and upload["revision"] is None
    assert 'timm.create_model("hf-hub:my-org/my-model", pretrained=True)' in upload["readme"]  # the pushed repo
    fake_api.calls.clear()
    push_folder(published, "my-org/my-model", token="hf_test", revision="v1")
    assert fake_api.calls[2] == ("create_branch", "my-org/my-model", {"branch": "v1", "exist_ok": True,
                                                                       "repo_type": "model"})
    assert fake_api.calls[3][1]["revision"] == "v1"
    assert tree_digest(published) == before


def test_zoo_model_push_to_hub_uploads_the_model(published, fake_api, no_network):
    model = refcal_zoo.load(published)
    model.push_to_hub("my-org/pushed", token="hf_test")
    upload = fake_api.calls[-1][1]
    assert {"config.json", "model.safetensors", "README.md", "metrics.json"} <= set(upload["files"])
    assert 'refcal_zoo.load("hf-hub:my-org/pushed")' in upload["readme"]


def test_push_without_token_is_a_clear_error_and_touches_nothing(published, fake_api):
    before = tree_digest(published)
    with pytest.raises(PublishError, match="no Hugging Face token.*HF_TOKEN.*hf auth login"):
        push_folder(published, "my-org/my-model")
    assert fake_api.calls == [] and tree_digest(published) == before


@pytest.mark.parametrize("repo_id", ["justname", "a/b/c", "org/../x", "-org/x", "org/x."])
def test_push_refuses_bad_repo_ids(published, fake_api, repo_id):
    with pytest.raises(ResolveError, match="not a Hub repo id"):
        push_folder(published, repo_id, token="hf_test")
    assert fake_api.calls == []


def test_push_refuses_offline_and_non_published_folders(published, trained_run, fake_api, monkeypatch, tmp_path):
    with pytest.raises(PublishError, match="not a published model folder"):
        push_folder(tmp_path, "my-org/x", token="hf_test")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_folder(published, "my-org/x", token="hf_test")
    assert fake_api.calls == []


def test_import_registers_models_and_exports_the_api():
    for name in ("load", "publish_run", "list_models", "predict_proba", "create_model"):
        assert callable(getattr(refcal_zoo, name))
    for method in ("from_pretrained", "save_pretrained", "push_to_hub"):
        assert callable(getattr(refcal_zoo.ZooModel, method))
    assert timm.is_model("resnet8_cifar")


def test_the_shipped_weights_folder_is_consulted(published, hf_env, tmp_path, monkeypatch):
    """Design for shipped weights: an entry whose files sit in <index dir>/weights/<name>/ loads offline."""
    from refcal_zoo.zoo import INDEX_PATH, weights_dir

    assert weights_dir() == INDEX_PATH.parent / "weights"
    index = write_index(tmp_path / "pkg", {ZOO_NAME: publish_entry(published)}, monkeypatch=monkeypatch)
    shutil.copytree(published, index.parent / "weights" / ZOO_NAME)
    assert weights_dir() == index.parent / "weights"
    model = refcal_zoo.load(ZOO_NAME)
    assert model.zoo_info["source"] == "embedded" and model.zoo_info["name"] == ZOO_NAME


def test_publish_under_a_zoo_name(trained_run, tmp_path, hf_env):
    """A suite cell's run (named after its method) is published under its zoo name: config, card and load agree."""
    out = publish_run(trained_run, tmp_path / "pub", name="resnet8-digitslt-renamed")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run_record"]["name"] == "resnet8-digitslt-renamed"
    card = ModelCard.load(out / "README.md")
    assert card.data.model_name == "resnet8-digitslt-renamed"
    assert "hf-hub:" not in card.text  # never pushed: no Hub line
    assert refcal_zoo.load(out).zoo_info["name"] == "resnet8-digitslt-renamed"
    assert (out / "model.safetensors").read_bytes() == (trained_run / "model.safetensors").read_bytes()
    with pytest.raises(ResolveError, match="not a valid zoo model name"):
        publish_run(trained_run, tmp_path / "bad", name="org/name")
    assert not (tmp_path / "bad").exists()



def test_notes_on_the_budget_reach_config_and_card_and_survive_republish_and_migrate(trained_run, tmp_path):
    """A reduced-budget entry says so on its card: the notes go to timm's ``pretrained_cfg.notes`` and the card's
    training section, and re-publishing or migrating the folder keeps them."""
    from refcal_zoo.hub.publish import migrate_folder

    note = "Budget: 3 epochs: a reduced budget (the recipe trains 200)."
    out = publish_run(trained_run, tmp_path / "pub", notes=[note])
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["notes"] == [note]
    training = ModelCard.load(out / "README.md").text.split("## Training recipe and budget actually used", 1)[1]
    assert training.lstrip().startswith(note + "\n")  # first thing under the heading
    again = publish_run(out, tmp_path / "again")  # notes=None keeps the folder's notes
    migrate_folder(again, zoo_name="resnet8-digitslt-renamed")
    assert note in ModelCard.load(again / "README.md").text
    assert json.loads((again / "config.json").read_text())["pretrained_cfg"]["notes"] == [note]
    plain = publish_run(trained_run, tmp_path / "plain")
    assert "reduced budget" not in ModelCard.load(plain / "README.md").text
    migrate_folder(plain, notes=["Budget: the recipe's full budget."])  # an entry published before notes existed
    assert "Budget: the recipe's full budget." in ModelCard.load(plain / "README.md").text

# --------------------------------------------------------------------------------------------------- load guards


def _unpinned_copy(published, dst):
    """A copy of the published folder whose config.json no longer pins the weights' sha256 (to edit the weights)."""
    folder = copy_folder(published, dst)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["run_record"]["provenance"]["weights_sha256"] = None
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_the_file_named(published, tmp_path, bad_value):
    from safetensors.torch import load_file, save_file

    folder = _unpinned_copy(published, tmp_path / "nan")
    state = load_file(str(folder / "model.safetensors"))
    state["fc.bias"][3] = bad_value
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(IntegrityError, match=r"nan/model\.safetensors' holds non-finite .* in 'fc\.bias'") as info:
        refcal_zoo.load(folder)
    assert "\n" not in str(info.value) and "retrain" in str(info.value)


def test_classifier_rows_are_checked_against_num_classes_before_reading_tensors(published, tmp_path):
    folder = _unpinned_copy(published, tmp_path / "k9")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 9
    cfg["label_names"] = cfg["pretrained_cfg"]["label_names"] = [str(k) for k in range(9)]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IntegrityError, match=r"num_classes=9 but '.*k9/model\.safetensors' holds a 10-class") as info:
        refcal_zoo.load(folder)
    assert "\n" not in str(info.value)


def test_shipped_entry_resolution_does_no_network_io(hf_env, monkeypatch):
    """A shipped entry loads from the package's files even when the Hub is allowed: no DNS lookup, no socket."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network I/O attempted: {args[:2]}")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for name in ("getaddrinfo", "gethostbyname", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = refcal_zoo.load("resnet8-digitslt-ce")
    assert model.zoo_info["source"] == "embedded"
    assert timm.create_model("resnet8_cifar.ce_digitslt", pretrained=True) is not None


# --------------------------------------------------------------------------------------------------- predict_proba


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return timm.create_model("resnet8_cifar", num_classes=10).eval()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.full((2, 3, 32, 32), float("nan")), "non-finite"),
        (torch.tensor([[[[float("inf")]]]]).expand(1, 3, 32, 32), "non-finite"),
        (torch.zeros(0, 3, 32, 32), "empty batch"),
        ([], "empty list"),
        (torch.zeros(32, 32), "rank 2"),
        (torch.zeros(1, 1, 3, 32, 32), "rank 5"),
    ],
)
def test_predict_proba_refuses_bad_batches_with_one_line(tiny_model, images, message):
    with pytest.raises(ValueError, match=message) as info:
        refcal_zoo.predict_proba(tiny_model, images)
    assert "\n" not in str(info.value)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(images=arrays(np.uint8, st.tuples(st.integers(1, 7), st.just(3), st.just(32), st.just(32))),
       batch_size=st.integers(1, 8))
def test_predict_proba_properties(tiny_model, images, batch_size):
    """Finite probabilities, rows summing to 1, and the same answer however the batch is split."""
    x = torch.from_numpy(images)
    whole = refcal_zoo.predict_proba(tiny_model, x, batch_size=256)
    split = refcal_zoo.predict_proba(tiny_model, x, batch_size=batch_size)
    assert whole.shape == (len(x), 10) and bool(torch.isfinite(whole).all())
    assert torch.allclose(whole.double().sum(1), torch.ones(len(x), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(whole, split, atol=1e-6)
    one = refcal_zoo.predict_proba(tiny_model, x[-1])
    assert torch.allclose(one, whole[-1:], atol=1e-6)


def _group_table(text: str) -> dict[str, list[str]]:
    """The card's head / medium / tail table: ``{group: [cells after the name]}``."""
    section = text.split("## Head, medium and tail classes", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:]}


def test_the_card_splits_classes_by_frequency_where_every_class_is_many_shot(trained_run, published, tmp_path):
    """On CIFAR-10-LT at rho 10 every class has > 100 training images, so the shot-group table was one "many" row.
    Publishing adds the test metrics per frequency third (head = 3 most frequent of 10 classes, tail = 3 rarest) to
    metrics.json, checked against the metric suite on the test logits of those classes; the card shows them there,
    and keeps the shot groups where they separate the classes (the digits run)."""
    from refcal_zoo.metrics import evaluate_predictions, evaluate_with_temperature

    def fmt(v: float) -> str:
        return f"{v:.4f}" if np.isfinite(v) else "n/a"

    run = copy_folder(trained_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    counts = [4950, 3837, 2974, 2305, 1787, 1385, 1073, 832, 645, 500]  # CIFAR-10-LT, rho 10
    assert len(config["run_record"]["dataset"]["train_counts"]) == len(counts)
    config["run_record"]["dataset"]["train_counts"] = counts
    (run / "config.json").write_text(json.dumps(config))
    t = config["run_record"]["temperature"]
    with np.load(run / "test_predictions.npz") as f:
        z, y = f["logits"].astype(np.float64), f["labels"]
    # the run's own metrics.json, as training would have written it with these counts: all in "many"
    (run / "metrics.json").write_text(json.dumps(evaluate_with_temperature(z, y, t, train_class_counts=counts)))
    assert not any(k.startswith(("medium/", "few/", "head/")) for k in json.loads((run / "metrics.json").read_text()))
    out = publish_run(run, tmp_path / "pub")
    metrics = json.loads((out / "metrics.json").read_text())
    table = _group_table((out / "README.md").read_text())
    assert list(table) == ["head", "mid", "tail"]
    for third, classes in (("head", [0, 1, 2]), ("mid", [3, 4, 5, 6]), ("tail", [7, 8, 9])):
        mask = np.isin(y, classes)
        raw, ts = evaluate_predictions(z[mask], y[mask]), evaluate_predictions(z[mask] / t, y[mask])
        assert metrics[f"{third}/n"] == int(mask.sum())
        for key in ("accuracy", "ece", "nll", "auroc_misclassification"):
            assert metrics[f"{third}/{key}"] == pytest.approx(raw[key], rel=1e-9, abs=1e-12, nan_ok=True)
            assert metrics[f"ts/{third}/{key}"] == pytest.approx(ts[key], rel=1e-9, abs=1e-12, nan_ok=True)
        assert table[third] == [str(len(classes)), f"{int(mask.sum()):,}", fmt(raw["accuracy"]), fmt(raw["ece"]),
                                fmt(ts["ece"]), fmt(ts["nll"]), fmt(raw["auroc_misclassification"])]
    text = " ".join((out / "README.md").read_text().split())
    assert 'put every class in one group here ("many"; the rarest class has 500 training images' in text
    assert ("head = the 3 most frequent (more than 2,305 training images), tail = the 3 rarest (fewer than 1,073)"
            in text)

    # the digits run's shot groups separate its classes: the card keeps them (metrics.json has the thirds too)
    assert set(_group_table((published / "README.md").read_text())) <= {"many", "medium", "few"}
    assert len(_group_table((published / "README.md").read_text())) >= 2
    assert "head/accuracy" in json.loads((published / "metrics.json").read_text())


def test_a_card_warns_when_the_published_epoch_precedes_the_learning_rate_decay(tmp_path):
    """On copies of a shipped 200-epoch entry (decay at 160) whose record is made to name a pre-decay epoch, as the
    validation-NLL pick of CRL's seed 0 was (epoch 107); the shipped seed 1 picked epoch 195, and gets no warning."""
    import yaml

    from refcal_zoo.hub import build_model_card

    shipped = REPO / "refcal_zoo" / "zoo" / "weights" / "resnet32-cifar10lt-crl"
    if not shipped.is_dir():
        pytest.skip("the shipped resnet32-cifar10lt-crl folder is absent")
    folder = copy_folder(shipped, tmp_path / "crl")
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((folder / "config.json").read_text())
    if config["run_record"]["selection"]["epoch"] > 160:
        assert "precedes the schedule's first learning-rate decay" not in build_model_card(folder).text
    picked = min((r for r in log if "val_nll" in r and r["epoch"] <= 160), key=lambda r: r["val_nll"])
    config["run_record"]["selection"]["epoch"] = picked["epoch"]
    (folder / "config.json").write_text(json.dumps(config))
    after = max((r for r in log if r["epoch"] > 160), key=lambda r: r["val_accuracy"])  # independent of the card
    text = build_model_card(folder).text
    assert f"Published weights: epoch {picked['epoch']}, selected by `best_nll`" in text
    assert (f"This epoch precedes the schedule's first learning-rate decay (after epoch 160); after it, validation "
            f"accuracy reached {after['val_accuracy']:.4f} (epoch {after['epoch']}), yet `best_nll` ranked it above "
            "every later epoch.") in text
    assert "the raw validation NLL rewards calibration as well as refinement" in text
    config["run_record"]["selection"]["rule"] = "best_accuracy"  # another rule: no NLL explanation
    (folder / "config.json").write_text(json.dumps(config))
    text = build_model_card(folder).text
    assert ("yet `best_accuracy` ranked it above every later epoch. This entry's scores may therefore understate its "
            "recipe." in text)
    assert "raw validation NLL" not in text
    tc = yaml.safe_load((folder / "train_config.yaml").read_text())
    for change in ({"milestones": [picked["epoch"] - 1, 180]}, {"schedule": "cosine"}):
        (folder / "train_config.yaml").write_text(yaml.safe_dump({**tc, "train": {**tc["train"], **change}}))
        assert "precedes the schedule's first learning-rate decay" not in build_model_card(folder).text
