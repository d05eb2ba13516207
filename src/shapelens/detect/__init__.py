"""Applications: adversarial-example detection by local intrinsic dimension.

* :class:`LIDDetector` -- Ma et al. (2018), "Characterizing adversarial subspaces using local
  intrinsic dimensionality": per-layer LID features on mini-batches + logistic regression.
* :mod:`shapelens.detect.attacks` -- FGSM (Goodfellow et al. 2015), BIM (Kurakin et al.
  2017) and PGD (Madry et al. 2018) in plain torch, to build and evaluate detectors.
"""

from . import attacks
from .attacks import bim, fgsm, pgd
from .lid import DetectionResult, LIDDetector, lid_features

__all__ = ["LIDDetector", "DetectionResult", "lid_features", "attacks", "fgsm", "bim", "pgd"]
