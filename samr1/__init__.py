"""samr1: SAM-R1-style reinforcement learning for reasoning segmentation, made fast.

Public entry points (see ARCHITECTURE.md for the contracts):

* :func:`samr1.answer.parse_answer` — completion text -> box + points in original pixels.
* :mod:`samr1.rewards` — think/answer format rewards, tiered IoU, :class:`~samr1.rewards.SamR1Reward`.
* :func:`samr1.sam.load_sam` — upstream SAM kinds or the small in-code "tiny" SAM.
* :class:`samr1.engine.SamEngine` — scores a whole rollout step (cache, batched decode, fused IoU).
* :func:`samr1.ops.mask_iou_from_logits` — SAM low-res logits -> IoU without full-res masks.
"""

__version__ = "0.1.0"
