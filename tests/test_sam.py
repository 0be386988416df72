"""load_sam: kinds, the tiny model's shapes, and errors that name the file and what was expected."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from samr1.sam import CheckpointError, DeviceError, ModelError, check_device, load_sam, model_id


def test_tiny_has_sam_shapes_and_runs_upstream_predictor():
    sam = load_sam("tiny")
    assert sam.image_encoder.img_size == 1024
    pred = SamPredictor(sam)
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    pred.set_image(img)
    assert tuple(pred.features.shape) == (1, 256, 64, 64)
    masks, scores, logits = pred.predict(box=np.array([10, 10, 60, 80]), multimask_output=True)
    assert masks.shape == (3, 97, 131) and logits.shape == (3, 256, 256) and np.isfinite(scores).all()


def test_seeded_tiny_is_reproducible_and_ids_differ_by_seed():
    a, b, c = load_sam("tiny", seed=1), load_sam("tiny", seed=1), load_sam("tiny", seed=2)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert model_id(a) == model_id(b) != model_id(c)


def test_unknown_kind():
    with pytest.raises(ModelError, match="unknown SAM kind 'vit_x'") as info:
        load_sam("vit_x")
    assert isinstance(info.value, ValueError)  # callers that caught ValueError keep working


def test_missing_checkpoint_names_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_sam("tiny", checkpoint=path)


def test_corrupt_checkpoint_names_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match=r"corrupt\.pth could not be read.*expected a tiny state dict"):
        load_sam("tiny", checkpoint=path)


def test_wrong_kind_checkpoint_is_refused_with_a_guess(tmp_path):
    sam = load_sam("tiny", seed=3)
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"tiny\.pth does not match kind 'vit_b'.*looks like tiny"):
        load_sam("vit_b", checkpoint=path)


def test_checkpoint_round_trip_and_id_from_file(tmp_path):
    sam = load_sam("tiny", seed=4)
    path = tmp_path / "ok.pth"
    torch.save(sam.state_dict(), path)
    again = load_sam("tiny", checkpoint=path, seed=99)
    for k, v in sam.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert model_id(again).startswith("tiny:") and "random" not in model_id(again)


def test_random_upstream_kind_warns():
    with pytest.warns(UserWarning, match="random weights"):
        sam = load_sam("vit_b")
    assert sam.image_encoder.patch_embed.proj.weight.shape[0] == 768



def test_checkpoint_with_extra_keys_names_them(tmp_path):
    state = load_sam("tiny", seed=6).state_dict()
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"extra\.pth does not match kind 'tiny' \(unexpected keys \['extra.weight'\]"):
        load_sam("tiny", checkpoint=path)


class _Payload:
    """Unpickling this creates ``marker``: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoints_are_refused_and_never_run(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    state = load_sam("tiny", seed=7).state_dict()
    torch.save({**state, "x": _Payload(marker)}, tmp_path / "torch_save.pth")  # zip, GLOBAL io.open
    with open(tmp_path / "raw_p4.pth", "wb") as f:  # a bare pickle, protocol 4 (STACK_GLOBAL)
        pickle.dump({"w": _Payload(marker)}, f, protocol=4)
    with open(tmp_path / "raw_p0.pth", "wb") as f:  # protocol 0, text opcodes
        pickle.dump(_Payload(marker), f, protocol=0)
    for name in ("torch_save.pth", "raw_p4.pth", "raw_p0.pth"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
            load_sam("tiny", checkpoint=tmp_path / name)
        msg = str(info.value)
        # one line, no advice to turn the safety off, and nothing ran
        assert "\n" not in msg and "weights_only=False" not in msg and "add_safe_globals" not in msg, msg
        assert not marker.exists(), name
    with pytest.raises(CheckpointError, match=r"refused: it holds the Python object io\.open, which could run code"):
        load_sam("tiny", checkpoint=tmp_path / "torch_save.pth")


def test_checkpoint_that_is_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_sam("tiny", checkpoint=tmp_path)


def test_devices_are_checked_before_building():
    for bad in ("gpu0", "cuda:x"):
        with pytest.raises(DeviceError, match="is not a torch device"):
            check_device(bad)
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(DeviceError, match=f"device '{missing}'"):
        load_sam("tiny", device=missing)
    assert check_device("cpu") == torch.device("cpu")
