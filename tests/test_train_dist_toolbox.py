"""Two processes on CPU (torchrun + gloo): held-out evaluation sharded over the processes, and the completions
table's samr1 columns under the node reward gather (each process logs its own rows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent('''
    import json, sys
    from accelerate import PartialState

    state = PartialState(cpu=True)
    manifest, out_dir = sys.argv[1], sys.argv[2]
    rank = state.process_index
    from transformers import AutoModelForImageTextToText
    from samr1.engine import SamEngine
    from samr1.policy import load_processor
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.train.data import PolicyDataset, check_rows, load_rows
    from samr1.train.heldout import HeldoutEvalCallback
    from samr1.train.rewards_hub import RewardHub
    from samr1.train.tiny_policy import build_tiny_policy

    rows = check_rows(load_rows(manifest))[0]
    path = f"{out_dir}/policy"
    if state.is_main_process:  # save_pretrained writes on the main process only
        build_tiny_policy(path, hidden=16, seed=1)
    state.wait_for_everyone()
    model, processor = AutoModelForImageTextToText.from_pretrained(path), load_processor(path)
    engine = SamEngine(load_sam("tiny-shapes"))
    cb = HeldoutEvalCallback(rows, engine, template="seg-zero", frame=56, max_new_tokens=8, every=0,
                             batch_size=2, output_dir=out_dir)
    cb.shard = (rank, state.num_processes)
    sharded = cb.evaluate(model, processor)
    cb.shard = (0, 1)
    whole = cb.evaluate(model, processor)

    ds = PolicyDataset(rows, policy_size=56)
    ids = [2 * rank, 2 * rank, 2 * rank + 1, 2 * rank + 1]
    comps = ["<think>t</think><answer>{\\"bbox\\": [1,1,40,40], \\"points_1\\": [9,9], \\"points_2\\": [20,20]}"
             "</answer>", "no answer", "<answer>{bad json</answer>", "<think>t</think><answer>{}</answer>"]
    extra = {}
    hub = RewardHub(SamR1Reward(engine, image_key="sam_image", model_size=(56, 56)), gather="node", dataset=ds,
                    rank=rank)
    kw = {"sam_image": [ds[r]["sam_image"] for r in ids], "mask": [ds[r]["mask"] for r in ids], "row_id": ids,
          "log_extra": lambda c, v: extra.setdefault(c, []).extend(v)}
    for f in hub.functions():
        f(prompts=None, completions=comps, **kw)
    local = SamR1Reward(SamEngine(load_sam("tiny-shapes")), image_key="sam_image", model_size=(56, 56))
    local(completions=list(comps), sam_image=kw["sam_image"], mask=kw["mask"])
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"sharded": sharded, "whole": whole, "extra": extra, "codes": local._last.codes,
                   "ious": [float(x) for x in local._last.ious]}, f)
    from samr1.train.driver import end_process_group

    end_process_group()  # as samr1 train ends: exiting with gloo's threads alive can abort (SIGABRT)
''')


@pytest.mark.slow
def test_sharded_heldout_eval_and_node_completions_columns(tmp_path):
    from samr1.train.scene_data import write_scene_manifest

    manifest = write_scene_manifest(tmp_path / "data", 5, size=(48, 64), seed=int(np.random.default_rng().integers(99)))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + int(np.random.default_rng().integers(2000, 4000))), str(script), manifest, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # each process evaluated its strided share (3 + 2 of 5 rows); both logged the figures of all 5, equal to
    # one unsharded evaluation
    assert [r["sharded"]["shard_rows"] for r in res] == [3, 2]
    for r in res:
        assert r["sharded"]["n"] == 5 == r["whole"]["n"]
        for k in ("giou", "ciou", "parse"):
            assert r["sharded"][k] == pytest.approx(r["whole"][k], abs=1e-9, nan_ok=True), k
    # node gather: the leader scored both ranks' rows, yet each rank's table got its own 4 rows, as if local
    for r in res:
        assert r["extra"]["samr1_reason"] == r["codes"]
        assert r["extra"]["samr1_iou"] == pytest.approx(r["ious"], abs=1e-6)
    assert res[0]["codes"][1] != "ok" and res[0]["codes"][0] == "ok"  # not vacuous: rows differ
