"""The policy sees the same inputs everywhere: warm start, TRL's GRPO generation, TRL's loss forward, evaluation.

One recorder wraps the tiny Qwen2.5-VL's ``forward`` (the real class, the real TRL trainer, the real pipeline)
and keeps every full-sequence call's inputs. For each prompt (two queries of different lengths in ONE batch, so
left padding is exercised) the multimodal rope positions the model computes over the prompt's tokens must be
identical on every path, and equal to those of the prompt alone; the input keys must be the same. A path that
drops ``mm_token_type_ids`` (1-D positions) or pads it on the other side (image positions on the wrong tokens)
fails here.
"""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch

from samr1.train.scene_data import write_scene_manifest
from samr1.train.tiny_policy import build_tiny_policy

FRAME = 56  # the tiny processor's max_pixels = 56 x 56: it shows the policy a 56-px image


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    policy = build_tiny_policy(root / "policy", hidden=16, seed=int(np.random.default_rng().integers(100)))
    manifest = write_scene_manifest(root / "data", 2, size=(72, 96), seed=int(np.random.default_rng().integers(1000)))
    rows = [json.loads(x) for x in open(manifest, encoding="utf-8")]
    # queries of very different lengths: the short prompt is left-padded by more than the ~15 tokens in front
    # of the image, the case where right-padded type ids would even crash
    rows[0]["query"] = "it"
    rows[1]["query"] = "the " + "very " * 12 + rows[1]["query"]
    with open(manifest, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "policy": policy, "manifest": manifest}


class Recorder:
    """Wraps the Qwen2.5-VL backbone's ``forward`` (every path reaches it: TRL's loss computes its log-probs
    from the backbone's hidden states) and records every call that sees a whole sequence."""

    def __init__(self, monkeypatch):
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel as cls

        self.calls: list[dict] = []
        original = cls.forward

        @functools.wraps(original)  # generate() checks model kwargs against forward's signature
        def forward(model, *args, **kw):
            ids = kw.get("input_ids")
            if ids is not None and ids.shape[1] > 1:  # not a cached decoding step
                self.calls.append({"model": model, **{k: v for k, v in kw.items() if v is not None}})
            return original(model, *args, **kw)

        monkeypatch.setattr(cls, "forward", forward)

    def take(self) -> list[dict]:
        out, self.calls = self.calls, []
        return out


def positions(call: dict) -> torch.Tensor:
    """The 3 x B x L rope positions the backbone uses for a recorded call: the ones handed to it (generate
    precomputes them: text row + 3 multimodal rows), else the ones its forward builds."""
    model = call["model"]
    if call.get("position_ids") is not None:
        pos = call["position_ids"]
        return pos[1:] if pos.shape[0] == 4 else pos
    if call.get("mm_token_type_ids") is None:
        mask = call["attention_mask"].long()
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return pos[None].expand(3, -1, -1)
    pos, _ = model.get_rope_index(call["input_ids"], image_grid_thw=call["image_grid_thw"],
                                  attention_mask=call["attention_mask"], mm_token_type_ids=call["mm_token_type_ids"])
    return pos


def prompt_views(call: dict, prompts: dict[tuple, torch.Tensor]) -> dict[tuple, torch.Tensor]:
    """For each known prompt found in a row of ``call``: the positions over that prompt's tokens."""
    pos = positions(call)
    found = {}
    for b in range(call["input_ids"].shape[0]):
        keep = call["attention_mask"][b].bool()
        ids = tuple(call["input_ids"][b][keep].tolist())
        row_pos = pos[:, b][:, keep]
        for p in prompts:
            if ids[:len(p)] == p:
                found[p] = row_pos[:, :len(p)]
    return found


def test_same_keys_and_positions_on_every_path(world, monkeypatch, tmp_path):
    from samr1.engine import SamEngine
    from samr1.pipeline import ReasoningSegmenter
    from samr1.policy import encode_prompt, load_processor
    from samr1.sam import load_sam
    from samr1.train.config import TrainConfig
    from samr1.train.data import PolicyDataset, check_rows, load_rows
    from samr1.train.driver import train
    from samr1.train.warmstart import warm_start

    rec = Recorder(monkeypatch)
    rows, _ = check_rows(load_rows(world["manifest"]))
    processor = load_processor(world["policy"])
    ds = PolicyDataset(rows, "seg-zero", FRAME)
    encs = [encode_prompt(processor, ds[i]["prompt"], ds[i]["image"]) for i in range(len(rows))]
    prompts = {tuple(e["input_ids"][0].tolist()): e for e in encs}
    assert len({len(p) for p in prompts}) == 2  # two lengths: one row is padded

    # the prompt alone (batch of one, no padding): the positions every path must reproduce
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(world["policy"]).model
    alone = {p: positions({"model": model, **e})[:, 0] for p, e in prompts.items()}

    # 1. the warm start (both rows in one batch)
    warm_start(world["policy"], rows, str(tmp_path / "warm"), steps=1, batch_size=2, policy_size=FRAME, log=None)
    warm_calls = rec.take()
    # 2. TRL's GRPO: generation, then the loss forward (2 prompts x G=2 completions on one process)
    cfg = TrainConfig(model=world["policy"], data=world["manifest"], sam="tiny-shapes", device="cpu",
                      num_generations=2, per_device_train_batch_size=4, max_completion_length=6, max_steps=1,
                      policy_image_size=FRAME, beta=0.0, output_dir=str(tmp_path / "grpo"), progress=False,
                      save_steps=100)
    train(cfg, log=lambda m: None)
    grpo_calls = rec.take()
    # 3. evaluation / segment: the pipeline's batched greedy generation
    seg = ReasoningSegmenter.from_pretrained(str(tmp_path / "grpo" / "final"), SamEngine(load_sam("tiny-shapes")),
                                             max_new_tokens=2)
    seg.segment_batch([ds[i]["sam_image"] for i in range(len(rows))], [r.query for r in rows])
    eval_calls = rec.take()

    paths = {"warm start": warm_calls, "GRPO (generation and loss)": grpo_calls, "eval": eval_calls}
    for name, calls in paths.items():
        assert calls, f"{name}: no forward recorded"
        for c in calls:
            # the image reaches the model as pixels, or as encoder outputs that generate() computed from them
            assert {"input_ids", "attention_mask", "mm_token_type_ids"} <= set(c), f"{name} handed {sorted(c)}"
            assert {"pixel_values", "image_grid_thw"} <= set(c) or "mm_encoder_outputs" in set(c) or \
                c.get("position_ids") is not None, f"{name} handed {sorted(c)}"
    n_seen = {name: 0 for name in paths}
    for name, calls in paths.items():
        for call in calls:
            for p, pos in prompt_views(call, alone).items():
                assert torch.equal(pos, alone[p]), f"{name}: the rope positions of a prompt differ from the prompt alone"
                n_seen[name] += 1
    # every path saw both prompts; GRPO saw them in generation AND in the loss forward (and the reference)
    assert n_seen["warm start"] >= 2 and n_seen["eval"] >= 2, n_seen
    assert n_seen["GRPO (generation and loss)"] >= 2 * len(prompts), n_seen


def test_left_padding_and_the_image_positions_in_a_mixed_batch(world):
    """collate: prompts of different lengths are left-padded with their type ids, completions right-padded."""
    from samr1.policy import load_processor, policy_inputs
    from samr1.train.data import PolicyDataset, check_rows, load_rows

    rows, _ = check_rows(load_rows(world["manifest"]))
    processor = load_processor(world["policy"])
    ds = PolicyDataset(rows, "seg-zero", FRAME)
    batch = policy_inputs(processor, [ds[i]["prompt"] for i in range(2)], [ds[i]["image"] for i in range(2)],
                          completions=["<answer>{}</answer>", "x"])
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(batch["mm_token_type_ids"] == 1, batch["input_ids"] == image_id)
    assert (batch["attention_mask"][:, 0] == 0).any()  # one prompt is left-padded
    lab = batch["labels"]
    assert (lab != -100).sum(1).tolist() == [len("<answer>{}</answer>") + 1, 2]  # bytes + eos
    assert processor.tokenizer.padding_side == "left"


def test_frame_check_names_the_seen_size(world):
    from samr1.policy import FrameError, check_frame, load_processor, seen_frame

    processor = load_processor(world["policy"])
    side = int(np.random.default_rng().choice([84, 112, 840, 1000]))
    assert seen_frame(processor, side) == (FRAME, FRAME)  # max_pixels caps it
    check_frame(processor, FRAME)
    with pytest.raises(FrameError, match=f"policy_image_size={side}.*to 56 x 56"):
        check_frame(processor, side)
    check_frame(processor, side, answer_frame="norm1000")  # normalised answers do not depend on the size


def test_saved_policy_carries_its_settings(world, tmp_path):
    """A trained policy's record gives eval / segment its template, frame and budget; a flag still wins."""
    from samr1.engine import SamEngine
    from samr1.pipeline import ReasoningSegmenter
    from samr1.policy import PolicyRecord, read_record, write_record
    from samr1.sam import ModelError, load_sam

    folder = tmp_path / "p"
    shutil.copytree(world["policy"], folder)
    assert read_record(folder) is None
    n = int(np.random.default_rng().integers(5, 500))
    write_record(folder, PolicyRecord(template="Where is {query}?", frame=FRAME, max_new_tokens=n))
    engine = SamEngine(load_sam("tiny-shapes"))
    seg = ReasoningSegmenter.from_pretrained(str(folder), engine)
    assert (seg.template, seg.model_size, seg.max_new_tokens) == ("Where is {query}?", (FRAME, FRAME), n)
    assert seg.generate_kwargs["repetition_penalty"] == 1.0 and seg.generate_kwargs["do_sample"] is False
    seg2 = ReasoningSegmenter.from_pretrained(str(folder), engine, template="seg-zero", max_new_tokens=3)
    assert seg2.max_new_tokens == 3 and "Please find" in seg2.template
    (folder / "samr1_policy.json").write_text('{"answer_frame": "inches"}')
    with pytest.raises(ModelError, match="answer_frame"):
        ReasoningSegmenter.from_pretrained(str(folder), engine)
