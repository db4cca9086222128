"""benchmarks/verify_zoo.py: the shipped CIFAR-10 weights re-evaluated outside the training pipeline."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from .conftest import REPO, SHARED_CIFAR10, write_cifar_like

_spec = importlib.util.spec_from_file_location("verify_zoo", REPO / "benchmarks" / "verify_zoo.py")
verify = importlib.util.module_from_spec(_spec)
sys.modules["verify_zoo"] = verify
_spec.loader.exec_module(verify)

ENTRY = "resnet20-cifar10lt-ce_e5"  # the smallest published CIFAR-10 entry


def test_cards_state_the_index_accuracy():
    from refcal_zoo.zoo import index_path, load_index

    published = {n: e for n, e in load_index(index_path()).items()
                 if e.published and e.dataset.get("id") == verify.CIFAR10_ID}
    assert ENTRY in published
    for name, entry in published.items():
        assert verify.card_accuracy(name) == pytest.approx(entry.metrics["accuracy"], abs=1e-12)


def test_a_mismatch_fails_and_is_recorded(tmp_path, hf_env, no_network):
    """On a generated test split (random images) the shipped model cannot reach its card's accuracy: exit 1."""
    data = write_cifar_like(tmp_path / "c10", schema="cifar10", num_classes=10, train_per_class=1, test_per_class=20)
    images, labels = verify.read_test_split(data)
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    assert np.bincount(labels).tolist() == [20] * 10
    out = tmp_path / "v.json"
    assert verify.main(["--entries", ENTRY, "--dataset", str(data), "--json", str(out)]) == 1
    (result,) = json.loads(out.read_text())["entries"]
    assert result["entry"] == ENTRY and result["n"] == 200 and result["agrees"] is False


def test_bad_entries_and_folders_are_refused_before_decoding(tmp_path):
    with pytest.raises(SystemExit, match="not in the zoo index"):
        verify.main(["--entries", "resnet32-nope"])
    with pytest.raises(SystemExit, match="not a published uoft-cs/cifar10 entry"):
        verify.main(["--entries", "resnet8-digitslt-ce"])
    with pytest.raises(SystemExit, match="no plain_text/test-"):
        verify.main(["--entries", ENTRY, "--dataset", str(tmp_path)])


@pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="the shared CIFAR-10 copy is absent (../shared/datasets)")
def test_shipped_weights_reproduce_their_card_on_the_real_test_split(hf_env, no_network):
    assert verify.main(["--entries", ENTRY]) == 0


def test_an_entry_not_shipped_is_read_from_its_published_folder_sha_checked(tmp_path, hf_env, no_network,
                                                                             monkeypatch):
    """An entry too large for the package: re-evaluated from the build's published folder when that holds the
    pinned weights, refused when it holds others, and reported as skipped when no copy is here."""
    import shutil

    from refcal_zoo.zoo import INDEX_PATH

    index = tmp_path / "zoo" / "index.yaml"  # the same entries, but no weights/ beside it: nothing is shipped
    index.parent.mkdir()
    shutil.copyfile(INDEX_PATH, index)
    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(index))
    data = write_cifar_like(tmp_path / "c10", schema="cifar10", num_classes=10, train_per_class=1, test_per_class=2)
    args = ["--entries", ENTRY, "--dataset", str(data), "--publish-dir", str(tmp_path / "pub")]
    out = tmp_path / "v.json"

    assert verify.main([*args, "--json", str(out)]) == 1  # asked for by name, and no copy anywhere
    (result,) = json.loads(out.read_text())["entries"]
    assert "not in the published folder" in result["skipped"] and "accuracy" not in result
    shutil.copytree(INDEX_PATH.parent / "weights" / ENTRY, tmp_path / "pub" / ENTRY)
    assert verify.main([*args, "--json", str(out)]) == 1  # random images: it runs, and disagrees
    (result,) = json.loads(out.read_text())["entries"]
    assert result["weights_from"] == "published folder" and result["n"] == 20
    other = INDEX_PATH.parent / "weights" / "resnet20-cifar10lt-refcal_joint_e5" / "model.safetensors"
    shutil.copyfile(other, tmp_path / "pub" / ENTRY / "model.safetensors")
    with pytest.raises(SystemExit, match="does not hold the weights the index pins"):
        verify.main(args)
    from huggingface_hub import constants as hf_constants

    assert hf_constants.HF_HUB_OFFLINE is True  # hf_env's setting, restored by main (it was True before too)
