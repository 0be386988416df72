"""The reward engine: scores a whole rollout step at once.

:class:`SamEngine` (:mod:`samr1.engine.engine`) turns (image, parsed answer, ground-truth mask) triples
into IoUs: images are de-duplicated by content and encoded once (:mod:`samr1.engine.cache`, backed by an
optional embedding store), all prompts of the step are decoded in one batched pass, and the fused
logits -> mask -> IoU op counts straight from the low-res logits. SAM 2 models are handled by
:mod:`samr1.engine.sam2_engine` behind the same class. :mod:`samr1.engine.reference` is the
straightforward per-completion path the engine is tested against. :class:`SamEngineConfig`
(:mod:`samr1.engine.config`) holds an engine's settings.
"""

from samr1.engine.config import SamEngineConfig
from samr1.engine.engine import SamEngine

__all__ = ["SamEngine", "SamEngineConfig"]
