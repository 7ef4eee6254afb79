"""The model shipped with the package: ``d2im_synthetic/<version>/``, a SavedModel (TF Serving's layout)
of D²IM-Net and its camera network trained on the synthetic dataset (MODEL_CARD.md).

It is package data, so an installed package (``pip install .``, not only a checkout) finds it: it is the
default ``--model`` of ``d2im reconstruct`` and ``d2im evaluate``.
"""

from pathlib import Path

BUNDLED_MODEL = Path(__file__).resolve().parent / "d2im_synthetic"
