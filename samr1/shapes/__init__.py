"""The toy world, kept apart from the library: synthetic scenes and the small SAM trained on them.

``tiny-shapes`` (``load_sam("tiny-shapes")``, weights in ``samr1/assets/``) is a SAM-architecture model
trained from scratch on :mod:`samr1.shapes.scenes`, so the demo, the semantic tests and the benches have a
segmenter whose IoUs mean something without any download; it is not a general segmenter.

* :mod:`samr1.shapes.scenes`: ``make_scene(seed)``, the training generator (image, exact visible masks,
  referring queries);
* :mod:`samr1.shapes.scenes_alt`: ``make_alt_scene(seed)``, an independent generator, never trained on;
* :mod:`samr1.shapes.train`: the trainer behind ``samr1 train-sam`` and the held-out ``evaluate``;
* :mod:`samr1.shapes.check`: held-out IoU on both generators and the resolution ceiling
  (``samr1 shapes-check``);
* :mod:`samr1.shapes.viz`: contact sheets, mask outlines, the training curve.

Only the scene generators are re-exported here (numpy and PIL; the trainer and checker import torch).
"""

from samr1.shapes.scenes import Scene, SceneObject, make_scene
from samr1.shapes.scenes_alt import make_alt_scene

__all__ = ["Scene", "SceneObject", "make_scene", "make_alt_scene"]
