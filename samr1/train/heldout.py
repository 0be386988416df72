"""Held-out evaluation during GRPO training, with ``samr1 eval``'s code.

:class:`HeldoutEvalCallback` evaluates the live policy on held-out rows before the first step, every
``every`` optimizer steps and after the last: greedy decoding through :class:`samr1.pipeline.ReasoningSegmenter`
(the inputs of :mod:`samr1.policy.inputs`), SAM's mask from the run's own engine, gIoU / cIoU / parse rate
with :func:`samr1.pipeline.evaluate_rows`. Each evaluation is logged through the trainer (``heldout/giou``,
``heldout/ciou``, ``heldout/parse``, ``heldout/seconds``; TensorBoard and ``metrics.jsonl`` see them) with the
window's training figures (``window/reward_share``: the reward's share of the training time since the last
evaluation; ``window/train_seconds``), and the best policy so far (by gIoU) is saved to ``<output_dir>/best``.

Under several processes each evaluates its strided shard of the rows (:func:`samr1.pipeline.shard_indices`,
as ``samr1 eval --num-shards``), the shards are gathered and merged (:func:`samr1.pipeline.merge_results`), so
every process logs the figures of the whole held-out set, equal to one unsharded evaluation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from samr1.train.driver import trainer_callback_base

__all__ = ["HeldoutEvalCallback"]


class HeldoutEvalCallback(trainer_callback_base()):
    """Evaluate the policy on ``rows`` every ``every`` steps (0: only before the first and after the last).

    Args:
        rows: checked :class:`samr1.train.data.TrainRow` objects (the first ``len(rows)`` are evaluated).
        engine: the run's :class:`samr1.engine.SamEngine` (its cache keeps held-out embeddings across evals).
        template, frame, max_new_tokens: how the policy is prompted and read (the training settings).
        every: optimizer steps between evaluations.
        batch_size: prompts per batched greedy generation.
        output_dir: the run folder; ``best/`` (policy, processor, record) is written there on main process.
        save_best: a callable ``(model, folder) -> None`` saving the policy (the driver's saver).
        reward_seconds: a callable returning the reward's cumulative seconds (the run's reward hub).
    """

    def __init__(self, rows: Sequence[Any], engine: Any, *, template: str, frame: int, max_new_tokens: int,
                 every: int, batch_size: int, output_dir: str, save_best: Callable[[Any, str], None] | None = None,
                 reward_seconds: Callable[[], float] | None = None):
        self.rows = list(rows)
        self.engine = engine
        self.template = template
        self.frame = int(frame)
        self.max_new_tokens = int(max_new_tokens)
        self.every = int(every)
        self.batch_size = int(batch_size)
        self.output_dir = output_dir
        self.save_best = save_best
        self.reward_seconds = reward_seconds or (lambda: 0.0)
        self.trainer: Any = None  # set by the driver: evaluations are logged through trainer.log
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._window_start = time.perf_counter()
        self._window_reward = 0.0
        self._last_step = -1
        self.shard = (0, 1)  # (this process's index, processes): set from the trainer's args at the start

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
        self.shard = (int(getattr(args, "process_index", 0)), int(getattr(args, "world_size", 1)))
        self._evaluate(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        if self.every > 0 and state.global_step % self.every == 0:
            # logging the evaluation clears the step's pending "should log" flag: keep the step's train log
            pending = control.should_log
            self._evaluate(state, model, processing_class)
            control.should_log = pending
            return control

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):
        self._evaluate(state, model, processing_class)

    # ------------------------------------------------------------------ work
    def evaluate(self, model: Any, processor: Any) -> dict[str, Any]:
        """gIoU / cIoU / parse rate of ``model`` on the rows (greedy; the model is put back in its mode).

        With ``shard = (i, k)``, k > 1, this process evaluates rows ``i, i + k, ...`` and the k shards are
        gathered from every process (a collective: all processes call it) and merged."""
        from samr1.pipeline import ReasoningSegmenter, evaluate_rows, merge_results, shard_indices

        rank, world = self.shard
        was_training = model.training
        seg = ReasoningSegmenter(model, processor, self.engine, template=self.template,
                                 model_size=(self.frame, self.frame), max_new_tokens=self.max_new_tokens,
                                 overlap=False)
        try:
            res = evaluate_rows(seg, self.rows, shard_indices(len(self.rows), world, rank),
                                batch_size=self.batch_size)
        finally:
            seg.close()
            model.train(was_training)
        if world > 1:
            from accelerate.utils import gather_object

            res["shard"] = [rank, world]
            res = merge_results(gather_object([res]))
        n = max(1, res["n"])
        return {"giou": res["giou"], "ciou": res["ciou"], "parse": 1.0 - res["n_parse_failures"] / n, "n": res["n"],
                "shard_rows": len(shard_indices(len(self.rows), world, rank))}

    def summary(self, data: str | None = None) -> dict[str, Any]:
        """The evaluations for ``summary.json`` and the model card: ``evaluations`` (every one), ``first``,
        ``best`` (by gIoU), ``last``, ``data``, ``rows`` and ``processes`` (the shards each was split into)."""
        return {"evaluations": list(self.history), "first": self.history[0] if self.history else None,
                "best": self.best, "last": self.history[-1] if self.history else None, "data": data,
                "rows": len(self.rows), "processes": self.shard[1]}

    def _evaluate(self, state: Any, model: Any, processor: Any) -> None:
        if model is None or processor is None or state.global_step == self._last_step:
            return  # already evaluated at this step (the last step is also a multiple of every)
        self._last_step = state.global_step
        t0 = time.perf_counter()
        train_s = t0 - self._window_start
        reward_now = self.reward_seconds()
        reward_s = reward_now - self._window_reward
        m = self.evaluate(model, processor)
        seconds = time.perf_counter() - t0
        rec = {"step": int(state.global_step), **m, "seconds": seconds, "window_train_seconds": train_s,
               "window_reward_share": (reward_s / train_s) if state.global_step > 0 and train_s > 0 else None}
        self.history.append(rec)
        if state.is_world_process_zero and (self.best is None or m["giou"] > self.best["giou"]):
            self.best = dict(rec)
            if self.save_best is not None:
                self.save_best(model, os.path.join(self.output_dir, "best"))
        if self.trainer is not None:
            logs = {"heldout/giou": m["giou"], "heldout/ciou": m["ciou"], "heldout/parse": m["parse"],
                    "heldout/seconds": seconds}
            if rec["window_reward_share"] is not None:
                logs["window/reward_share"] = rec["window_reward_share"]
                logs["window/train_seconds"] = train_s
            mode = model.training
            model.eval()  # GRPOTrainer.log averages the metrics of the model's mode: keep the train ones
            try:
                self.trainer.log(logs)
            finally:
                model.train(mode)
        self._window_start = time.perf_counter()
        self._window_reward = reward_now
