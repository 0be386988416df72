"""The reward side of a GRPO step: one :class:`SamR1Reward` per process, wrapped for TRL.

:class:`RewardHub` hands TRL one reward function per component (``think_format``, ``answer_format``,
``tiered_iou``, ...; TRL logs ``rewards/<name>/mean`` for each) and, once per step (the first component
call; the others reuse the result):

- keys the step's ``sam_image`` column by pixel content, so the G copies of a prompt (distinct objects
  when a dataset decodes per access) are ONE object for the reward and the engine (hashed once per batch,
  not per copy);
- optionally (``gather="node"``) gathers the step's completions from every process of the node to the
  node's first process, which scores them in one engine call and scatters the rewards back;
- logs through TRL's ``log_metric``: ``samr1/parse_failure_rate``, ``samr1/cache_hit_rate`` (this step),
  ``samr1/encoder_images`` (this step), ``samr1/reward_latency_s``, ``samr1/distinct_images`` and, from
  :class:`SamR1Reward`, ``samr1/reason/<code>``, ``samr1/mean_iou`` and ``samr1/engine/<stat>``. With
  several processes the first three are the whole job's: each process counts what it did itself (its own
  rows' parse failures; the cache lookups and encodes of its own engine, which under ``gather="node"`` is
  the node leader's alone), the counts are summed over processes, and every process logs the same rates, so
  TRL's mean over processes is the true figure (not a rate averaged with the zeros of processes that
  scored nothing). :meth:`RewardHub.reduced_totals` sums the run's counts the same way;
- encodes ahead (:meth:`RewardHub.prefetch`): when the data loader draws a batch, its distinct original
  images are encoded on a side thread while the policy generates, so the cache is warm when the reward
  runs (on CUDA the encoder's kernels still queue on the device; the thread only overlaps the host side);
- appends one JSON line per step to ``reward_calls.jsonl`` (rank, step, completions, and for every
  ``row_id`` how many of its completions this call received, and whether they were contiguous);
- hands every scored batch to an optional :class:`samr1.train.rollouts.RolloutLog`, which writes a few groups
  every K steps for ``samr1 view``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from samr1.hashing import array_digest
from samr1.train.signal import GroupSignal

__all__ = ["RewardHub", "content_key", "dedup_by_content"]


def content_key(image: Any) -> Any:
    """A key equal for equal pixels: blake2b of dtype + shape + bytes for arrays and PIL images; paths as is."""
    if isinstance(image, (str, os.PathLike)):
        return ("path", os.fspath(image))
    return ("pixels", array_digest(np.asarray(image)))


def dedup_by_content(column: Sequence[Any]) -> tuple[list[Any], int]:
    """``column`` with every value replaced by the FIRST value of equal content (identity-shared), and the
    number of distinct contents. Objects already identical are hashed once (id memo)."""
    by_id: dict[int, Any] = {}
    by_key: dict[Any, Any] = {}
    out = []
    for v in column:
        if v is None:
            out.append(v)
            continue
        k = by_id.get(id(v))
        if k is None:
            k = content_key(v)
            by_id[id(v)] = k
        out.append(by_key.setdefault(k, v))
    return out, len(by_key)


class _Component:
    """One component as a TRL reward function (``__name__`` = the component's TRL name)."""

    def __init__(self, hub: RewardHub, index: int, name: str):
        self._hub = hub
        self._index = index
        self.__name__ = name
        self.__qualname__ = name

    def __call__(self, prompts: Any = None, completions: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        return self._hub.component_values(self._index, prompts, completions, kwargs)


class RewardHub:
    """SAM-R1's reward components for TRL, scored once per step, with step metrics and optional node gather.

    Args:
        reward: a :class:`samr1.rewards.SamR1Reward` (its ``image_key`` is the column with the ORIGINAL image).
        log_dir: folder for ``reward_calls.jsonl`` (None: not written).
        gather: "rank" (each process scores its own slice) or "node" (see the module docstring).
        dataset: needed for ``gather="node"``: rows are re-read on the scoring process by ``row_id`` (images
            never travel between processes; only completion texts and row ids do).
        rank: this process's rank (for the log).
        rollouts: a :class:`samr1.train.rollouts.RolloutLog` (None: no rollouts logged); closed by :meth:`close`.
    """

    def __init__(self, reward: Any, *, log_dir: str | None = None, gather: str = "rank", dataset: Any = None,
                 rank: int = 0, rollouts: Any = None):
        if gather not in ("rank", "node"):
            raise ValueError(f"gather must be 'rank' or 'node', got {gather!r}")
        if gather == "node" and dataset is None:
            raise ValueError("gather='node' needs the dataset (rows are re-read by row_id on the scoring process)")
        self.reward = reward
        self.fns = reward.functions()
        self.names = [f.__name__ for f in self.fns]
        self.gather = gather
        self.dataset = dataset
        self.rank = rank
        self.log_path = os.path.join(log_dir, "reward_calls.jsonl") if log_dir else None
        self.rollouts = rollouts
        self._last_completions: Any = None
        self._last_values: list[list[float]] = []
        self._lock = threading.Lock()
        self._prev_engine = self._engine_counts()
        self._pool: Any = None
        self._pending: list[Any] = []
        self.prefetch_errors = 0
        self._node_group: Any = None
        self._scored_ids: list[int] | None = None  # node gather: the row ids this process scored last step
        self._node_leader = 0
        self.totals = {"steps": 0, "completions": 0, "parse_failures": 0, "encoder_images": 0, "cache_hits": 0,
                       "cache_lookups": 0, "reward_seconds": 0.0}
        self.signal = GroupSignal()
        if gather == "node":
            self._init_node_group()

    @property
    def signal_warnings(self) -> list[str]:
        """The "nothing to follow" warnings issued so far (see :class:`samr1.train.signal.GroupSignal`)."""
        return self.signal.warnings

    def functions(self) -> list[_Component]:
        """The TRL reward functions, one per component, in the reward's component order."""
        return [_Component(self, i, n) for i, n in enumerate(self.names)]

    # ------------------------------------------------------------------ encode ahead
    def prefetch(self, images: Sequence[Any]) -> None:
        """Start encoding the distinct ``images`` (original resolution) on a side thread; returns at once.

        The reward waits for pending encodes before scoring (so an image is never encoded twice at once).
        A failure here is counted (``prefetch_errors``) and left to the reward, which reports the row.
        """
        cache = getattr(getattr(self.reward, "engine", None), "cache", None)
        if cache is None or not images:
            return
        distinct, _ = dedup_by_content(list(images))
        todo = list({id(x): x for x in distinct if x is not None}.values())
        if not todo:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samr1-encode-ahead")

        def run() -> None:
            import torch

            with torch.inference_mode():
                cache.get_or_encode(todo)

        self._pending.append(self._pool.submit(run))

    def _wait_prefetch(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - the reward re-encodes and reports a bad row itself
                self.prefetch_errors += 1

    def close(self) -> None:
        """Finish pending encodes and stop the side thread; write out the queued rollouts."""
        self._wait_prefetch()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.rollouts is not None:
            self.rollouts.close()

    # ------------------------------------------------------------------ distributed
    def _init_node_group(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self.gather = "rank"  # one process: nothing to gather
            return
        world = dist.get_world_size()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if world % local:
            raise RuntimeError(f"world size {world} is not a multiple of LOCAL_WORLD_SIZE {local}")
        rank = dist.get_rank()
        # Every process must create every group, in the same order (torch.distributed's rule).
        for node in range(world // local):
            ranks = list(range(node * local, (node + 1) * local))
            group = dist.new_group(ranks=ranks)
            if rank in ranks:
                self._node_group, self._node_leader = group, ranks[0]

    def node_columns(self, row_ids: list[int]) -> dict[str, list[Any]]:
        """The reward's columns for the dataset rows ``row_ids``, re-read from the dataset as the node leader
        scores them: the images, the instance masks, the ignore regions (ReasonSeg's, None elsewhere; only when
        the reward reads an ignore column) and the row ids."""
        cols = [self.dataset.sam_columns(r) for r in row_ids]
        out = {self.reward.image_key: [c[0] for c in cols], self.reward.mask_key: [c[1] for c in cols],
               "row_id": list(row_ids)}
        if getattr(self.reward, "ignore_key", None):
            out[self.reward.ignore_key] = [c[2] for c in cols]
        return out

    def _score_gathered(self, completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[list[float]], list[bool]]:
        """Gather (completions, row ids) to the node leader, score there, scatter each rank's slice back: the
        values of its rows, and whether each of its rows failed to parse."""
        import torch.distributed as dist

        group, leader = self._node_group, self._node_leader
        rank = dist.get_rank()
        n_local = dist.get_world_size(group)
        payload = (list(completions), [int(r) for r in kwargs["row_id"]])
        got: list[Any] | None = [None] * n_local if rank == leader else None
        dist.gather_object(payload, got, dst=leader, group=group)
        if rank == leader:
            assert got is not None
            all_comps = [c for p in got for c in p[0]]
            all_ids = [r for p in got for r in p[1]]
            self._scored_ids = all_ids
            # the completions table takes this process's rows only: each rank logs its slice after the scatter
            kw = {k: v for k, v in kwargs.items() if not isinstance(v, list) and k != "log_extra"}
            kw.update(self.node_columns(all_ids))
            try:
                values = self._score_local(all_comps, kw)
                failed = self._parse_failed(values)
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                # The other ranks wait in scatter: tell them, or they hang until the collective times out.
                failure = f"reward scoring failed on rank {rank}: {type(exc).__name__}: {exc}"
                out = [_ScoringFailed(failure)] * n_local
            else:
                last = getattr(self.reward, "_last", None)
                codes = list(last.codes) if last is not None else [None] * len(all_comps)
                ious = [float(x) for x in last.ious] if last is not None else [None] * len(all_comps)
                out, start = [], 0
                for p in got:
                    n = len(p[0])
                    out.append({"values": [v[start:start + n] for v in values], "failed": failed[start:start + n],
                                "extra": {"samr1_reason": codes[start:start + n], "samr1_iou": ious[start:start + n]}})
                    start += n
        else:
            out = None
            self._scored_ids = []
        recv: list[Any] = [None]
        dist.scatter_object_list(recv, out, src=leader, group=group)
        if isinstance(recv[0], _ScoringFailed):
            raise RuntimeError(recv[0].message)
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            for column, values in recv[0]["extra"].items():
                log_extra(column, values)
        return recv[0]["values"], recv[0]["failed"]

    # ------------------------------------------------------------------ scoring
    def _parse_failed(self, values: list[list[float]]) -> list[bool]:
        """Per scored row: did its answer fail to parse (answer_format 0, or the reward's own parse)."""
        if "answer_format" in self.names:
            return [v <= 0.0 for v in values[self.names.index("answer_format")]]
        last = getattr(self.reward, "_last", None)  # no answer component: the reward's parse of this batch
        return [not a.ok for a in getattr(last, "answers", [])]

    @staticmethod
    def _job_counts(mine: dict[str, float], longest: tuple[str, ...] = ()) -> dict[str, float]:
        """``mine`` over every process of the job: summed, or the largest for the keys in ``longest`` (this
        process's own values when it runs alone). A collective when several run: every process calls it."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return dict(mine)
        every: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        return {k: (max if k in longest else sum)(c[k] for c in every) for k in mine}

    def reduced_totals(self) -> dict[str, float]:
        """:attr:`totals` of the whole job: counts summed over processes; ``steps`` and ``reward_seconds`` the
        largest of any process (every process runs every step). A collective when several processes run:
        every process must call it."""
        return self._job_counts(self.totals, longest=("steps", "reward_seconds"))

    def _engine_counts(self) -> tuple[int, int, int]:
        st = getattr(getattr(self.reward, "engine", None), "stats", None) or {}
        return int(st.get("encoder_images", 0)), int(st.get("cache_hits", 0)), int(st.get("cache_misses", 0))

    def _score_local(self, completions: list[Any], kwargs: dict[str, Any]) -> list[list[float]]:
        key = self.reward.image_key
        if isinstance(kwargs.get(key), list):
            kwargs = dict(kwargs)
            kwargs[key], _ = dedup_by_content(kwargs[key])
        # Same list objects for every component: the first call computes, the others reuse (SamR1Reward's memo).
        values = [list(map(float, f(completions=completions, **kwargs))) for f in self.fns]
        if self.rollouts is not None:  # here the columns are the ones scored (the node's, under node gather)
            self.rollouts.observe(completions, kwargs, self.names, values)
        return values

    def component_values(self, index: int, prompts: Any, completions: Sequence[Any] | None,
                         kwargs: dict[str, Any]) -> list[float]:
        with self._lock:
            if completions is None:
                raise ValueError("completions must be given (TRL passes completions=...)")
            if completions is not self._last_completions:
                self._last_values = self._step(list(completions), kwargs)
                self._last_completions = completions
            return self._last_values[index]

    def _step(self, completions: list[Any], kwargs: dict[str, Any]) -> list[list[float]]:
        log_metric = kwargs.get("log_metric")
        kw = {k: v for k, v in kwargs.items() if k not in ("prompts", "completion_ids")}
        self._wait_prefetch()
        t0 = time.perf_counter()
        if self.gather == "node" and self._node_group is not None:
            values, failed = self._score_gathered(completions, kw)
        else:
            values = self._score_local(completions, kw)
            failed = self._parse_failed(values)
        latency = time.perf_counter() - t0
        n = len(completions)
        # What THIS process did: its rows' parse failures, its engine's lookups and encodes (under node gather
        # only the leader's engine works; the others add 0, never a rate of 0).
        enc, hits, misses = self._engine_counts()
        mine = {"completions": n, "parse_failures": sum(failed), "encoder_images": enc - self._prev_engine[0],
                "cache_hits": hits - self._prev_engine[1]}
        mine["cache_lookups"] = mine["cache_hits"] + misses - self._prev_engine[2]
        self._prev_engine = (enc, hits, misses)
        images = kwargs.get(self.reward.image_key)
        distinct = dedup_by_content(images)[1] if isinstance(images, list) else 0
        t = self.totals
        t["steps"] += 1
        for k, v in mine.items():
            t[k] += v
        t["reward_seconds"] += latency
        job = self._job_counts(mine)  # the same on every process, so TRL's mean over processes is this
        answers = getattr(getattr(self.reward, "_last", None), "answers", None)
        if answers is not None and len(answers) != n:
            answers = None  # node gather: the scoring process's batch, not this one's
        ids = kwargs.get("row_id")
        sig = self.signal.update([sum(col[i] for col in values) for i in range(n)],
                                 ids if isinstance(ids, list) and len(ids) == n else None, answers,
                                 1.0 - mine["parse_failures"] / n if n else 0.0)
        if callable(log_metric):
            log_metric("samr1/zero_spread_frac", sig["zero_spread_frac"])
            log_metric("samr1/dup_answer_frac", sig["dup_answer_frac"])
            log_metric("samr1/parse_failure_rate",
                       job["parse_failures"] / job["completions"] if job["completions"] else 0.0)
            log_metric("samr1/cache_hit_rate", job["cache_hits"] / job["cache_lookups"] if job["cache_lookups"] else 0.0)
            log_metric("samr1/encoder_images", float(job["encoder_images"]))
            log_metric("samr1/reward_latency_s", latency)
            log_metric("samr1/distinct_images", float(distinct))
        self._record(kwargs, n, latency, mine["encoder_images"])
        return values

    def _record(self, kwargs: dict[str, Any], n: int, latency: float, encoded: int) -> None:
        if not self.log_path:
            return
        ids = kwargs.get("row_id")
        groups: dict[str, dict[str, Any]] = {}
        if isinstance(ids, list):
            for pos, r in enumerate(ids):
                g = groups.setdefault(str(int(r)), {"copies": 0, "first": pos, "last": pos})
                g["copies"] += 1
                g["last"] = pos
        state = kwargs.get("trainer_state")
        line = {"rank": self.rank, "step": int(getattr(state, "global_step", -1)), "completions": n,
                "row_ids": [int(r) for r in ids] if isinstance(ids, list) else None,
                "copies": {k: v["copies"] for k, v in groups.items()},
                "contiguous": all(v["last"] - v["first"] + 1 == v["copies"] for v in groups.values()),
                "latency_s": round(latency, 6), "encoder_images": encoded, "gather": self.gather}
        if self._scored_ids is not None:  # node gather: what this process scored for the whole node
            line["scored_row_ids"] = list(self._scored_ids)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


class _ScoringFailed:
    """What the node leader scatters instead of rewards when scoring raised, so that every rank raises."""

    def __init__(self, message: str):
        self.message = message
