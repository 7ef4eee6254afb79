"""How much of the Laplacian loss's target a trained network's front displacement map explains.

L_lap (:mod:`d2im_tf.models.losses`) compares the Laplacian of the front map with the divergence of
the ground-truth normal map at the front points near the surface. A map of zeros leaves the whole
target as residual; a map that carries the surface detail removes it. The share explained,

    1 − L_lap(front map) / L_lap(zero map),

says whether the maps have learnt the detail the loss asks for, whatever the base field does: 1 for a
map that follows it exactly, 0 for none, below 0 for noise or detail of the wrong sign. It needs the
training data (normal maps, SDF samples) and a run folder, not an export: ``tools/laplacian_fit.py``.
"""

from __future__ import annotations

import tensorflow as tf


def explained_share(loss: float, zero_loss: float) -> float:
    """``1 − loss / zero_loss``; 0 when the target is empty (nothing to explain)."""
    return 1.0 - loss / zero_loss if zero_loss > 0 else 0.0


def laplacian_fit(model, dataset, batches: int) -> dict:
    """L_lap of ``model``'s front maps and of zero maps over the first ``batches`` batches of ``dataset``
    (a ``tf.data`` dataset of training batches), their means, and :func:`explained_share` of the means:
    ``{"loss_lap", "loss_lap_zero", "explained", "batches"}``."""
    if not model.spec.maps:
        raise ValueError(f"variant {model.model_config.variant!r} has no displacement maps")
    losses, zero_losses = [], []
    for batch in dataset.take(batches):
        outputs = model(batch, training=False)
        losses.append(float(model.laplacian_term(batch, outputs)))
        zero_maps = {**outputs, "maps": tf.zeros_like(outputs["maps"])}
        zero_losses.append(float(model.laplacian_term(batch, zero_maps)))
    if not losses:
        raise ValueError("the dataset gave no batch")
    loss, zero_loss = sum(losses) / len(losses), sum(zero_losses) / len(zero_losses)
    return {
        "loss_lap": loss,
        "loss_lap_zero": zero_loss,
        "explained": explained_share(loss, zero_loss),
        "batches": len(losses),
    }
