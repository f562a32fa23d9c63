"""Classifier-free guidance on the full denoiser output (Ho & Salimans 2022, Eq. 6).

D_w = D_uncond + w (D_cond - D_uncond): w = 1 is the conditional model, w = 0 the unconditional
one. The conditional and unconditional passes run as one batch. `scale` is an array, so changing
it does not recompile. (DiT guides only 3 of 4 latent channels, a known bug: here every channel is.)
The model may return a pytree (Cas-DM's (eps_hat, x0_hat)): every leaf is guided alike.

`ClassifierFree` is the guided denoiser the samplers receive; it also exposes its two halves
(`cond`, `uncond`) and its `scale` for samplers that use them separately (CFG as a
predictor-corrector, cfg_pc.py), and `rows(n)`, the same guidance for the first n rows (DC-Solver
fits its ratios on a few rows).
"""

import jax
import jax.numpy as jnp


class ClassifierFree:
    """`model(x, logsnr, labels) -> x0_hat` (or a pytree of per-row outputs) guided towards
    `labels` with weight `scale`; `null_label` is the unconditional class."""

    def __init__(self, model, labels, null_label: int, scale):
        self.model, self.labels, self.null_label, self.scale = model, labels, null_label, scale

    def __call__(self, x, logsnr):
        n = x.shape[0]
        null = jnp.full_like(self.labels, self.null_label)
        both = self.model(jnp.concatenate([x, x]), logsnr, jnp.concatenate([self.labels, null]))
        return jax.tree.map(lambda b: b[n:] + self.scale * (b[:n] - b[n:]), both)

    def cond(self, x, logsnr):
        return self.model(x, logsnr, self.labels)

    def uncond(self, x, logsnr):
        return self.model(x, logsnr, jnp.full_like(self.labels, self.null_label))

    def rows(self, n: int) -> "ClassifierFree":
        return ClassifierFree(self.model, self.labels[:n], self.null_label, self.scale)


def classifier_free(model, labels, null_label: int, scale) -> ClassifierFree:
    """model(x, logsnr, labels) -> x0_hat (or a pytree of per-row outputs); returns
    denoise(x, logsnr) with guidance applied."""
    return ClassifierFree(model, labels, null_label, scale)
