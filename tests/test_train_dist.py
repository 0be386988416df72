"""Two processes on CPU (torchrun + gloo): the batch-size / G check and the node reward gather.

accelerate's ``PartialState(cpu=True)`` (what ``GRPOConfig(use_cpu=True)`` passes) becomes MULTI_CPU under
torchrun; without ``cpu=True`` each process would silently run alone. The worker script below runs in both
processes and writes what it saw; the assertions are here.
"""

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
    import numpy as np
    from accelerate import PartialState

    state = PartialState(cpu=True)
    manifest, out_dir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank = state.process_index
    res = {"rank": rank, "num_processes": state.num_processes, "type": state.distributed_type.name}

    from samr1.train.driver import group_locality_warning
    res["warn_split"] = group_locality_warning(2, 1, 4, state.num_processes)
    res["warn_whole"] = group_locality_warning(4, 1, 4, state.num_processes)
    res["warn_spg"] = group_locality_warning(2, 2, 4, state.num_processes)
    res["warn_node"] = group_locality_warning(2, 1, 4, state.num_processes, "node")

    from samr1.engine import SamEngine
    from samr1.rewards import SamR1Reward
    from samr1.sam import load_sam
    from samr1.train.data import PolicyDataset, check_rows, load_rows
    from samr1.train.rewards_hub import RewardHub

    ds = PolicyDataset(check_rows(load_rows(manifest))[0], policy_size=56)
    rng = np.random.default_rng(seed + rank)
    ids = [2 * rank, 2 * rank, 2 * rank + 1, 2 * rank + 1]   # two prompts x G=2 per rank, different per rank
    comps = []
    for k, r in enumerate(ids):
        m = ds[r]["mask"]
        ys, xs = np.nonzero(m)
        h, w = m.shape
        j = rng.integers(-2, 3, size=4)
        box = [(xs.min() + j[0]) * 840 / w, (ys.min() + j[1]) * 840 / h, (xs.max() + j[2]) * 840 / w,
               (ys.max() + j[3]) * 840 / h]
        c = [xs.mean() * 840 / w, ys.mean() * 840 / h]
        comps.append("<think>t</think><answer>{\\"bbox\\": [%d,%d,%d,%d], \\"points_1\\": [%d,%d], \\"points_2\\": [%d,%d]}"
                     "</answer>" % (*box, *c, *c) if k != 3 else "<answer>{bad json</answer>")
    sam = load_sam("tiny-shapes")
    engine = SamEngine(sam)
    hub = RewardHub(SamR1Reward(engine, image_key="sam_image"), gather="node", dataset=ds, rank=rank)
    kw = {"sam_image": [ds[r]["sam_image"] for r in ids], "mask": [ds[r]["mask"] for r in ids], "row_id": ids}
    logged = {}
    got = [f(prompts=None, completions=comps, log_metric=logged.__setitem__, **kw) for f in hub.functions()]
    st = engine.stats
    res.update(logged=logged, totals=hub.reduced_totals(), engine_hits=st["cache_hits"],
               engine_lookups=st["cache_hits"] + st["cache_misses"])
    # without the answer component, parse failures come from the reward's own parse of the node's rows
    engine2 = SamEngine(sam)
    hub2 = RewardHub(SamR1Reward(engine2, image_key="sam_image", components=("think", "iou")), gather="node",
                     dataset=ds, rank=rank)
    logged2 = {}
    hub2.functions()[0](prompts=None, completions=comps, log_metric=logged2.__setitem__, **kw)
    res.update(logged2=logged2, totals2=hub2.reduced_totals())
    local = SamR1Reward(SamEngine(sam), image_key="sam_image").functions()
    want = [f(completions=list(comps), sam_image=[ds[r]["sam_image"] for r in ids], mask=[ds[r]["mask"] for r in ids])
            for f in local]
    res.update(got=got, want=want, encoder_images=engine.stats["encoder_images"], gather=hub.gather)

    # scoring that raises on the node leader must raise on every rank, not leave the others waiting
    def boom(*a, **k):
        raise RuntimeError("engine exploded")

    if rank == 0:
        hub._score_local = boom
    try:
        hub.functions()[0](prompts=None, completions=comps[::-1], **{k: v[::-1] for k, v in kw.items()})
        res["failure"] = None
    except RuntimeError as exc:
        res["failure"] = str(exc)
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(res, f)
    from samr1.train.driver import end_process_group

    end_process_group()  # as samr1 train ends: exiting with gloo's threads alive can abort (SIGABRT)
''')


def test_two_process_group_check_and_node_gather(tmp_path):
    from samr1.train.scene_data import write_scene_manifest

    manifest = write_scene_manifest(tmp_path / "data", 4, size=(48, 64), seed=int(np.random.default_rng().integers(1000)))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + int(np.random.default_rng().integers(0, 2000))), str(script), manifest, str(tmp_path),
           str(int(np.random.default_rng().integers(1 << 20)))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in res:
        assert r["num_processes"] == 2 and r["type"] == "MULTI_CPU"
        assert "per_device_train_batch_size x steps_per_generation = 2 x 1 = 2" in r["warn_split"]
        assert "--per-device-train-batch-size 4" in r["warn_split"] and "--steps-per-generation 2" in r["warn_split"]
        assert r["warn_whole"] is None and r["warn_spg"] is None and r["warn_node"] is None
        assert r["gather"] == "node"
        for got, want in zip(r["got"], r["want"], strict=True):
            assert got == pytest.approx(want, abs=1e-6)
    for r in res:
        assert r["failure"] and "engine exploded" in r["failure"] and "rank 0" in r["failure"], r["failure"]
    # scored once, on the node's first process: it encoded both processes' images, the other none
    assert res[0]["encoder_images"] == 4 and res[1]["encoder_images"] == 0
    # logged figures are the node's (TRL logs the mean over processes): one bad answer per process of 4, and the
    # leader's cache hit rate; never a rate averaged with the zeros of the process that scored nothing
    hit_rate = res[0]["engine_hits"] / res[0]["engine_lookups"]
    assert res[1]["engine_lookups"] == 0 and 0 < hit_rate < 1
    for r in res:
        for logged in (r["logged"], r["logged2"]):
            assert logged["samr1/parse_failure_rate"] == pytest.approx(2 / 8)
            assert logged["samr1/encoder_images"] == 4
        assert r["logged"]["samr1/cache_hit_rate"] == pytest.approx(hit_rate)
        for totals in (r["totals"], r["totals2"]):  # the summary's totals: the job's, not rank 0's
            assert (totals["steps"], totals["completions"], totals["parse_failures"], totals["encoder_images"]) == \
                (1, 8, 2, 4)
        assert r["totals"]["cache_lookups"] == res[0]["engine_lookups"]
    # not a vacuous match: SAM scored some answers above the lowest tier
    assert sum(sum(r["got"][2]) for r in res) > 0
