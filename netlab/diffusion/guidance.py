"""Classifier-free guidance on the full denoiser output (Ho & Salimans 2022, Eq. 6).

D_w = D_uncond + w (D_cond - D_uncond): w = 1 is the conditional model, w = 0 the unconditional
one. The conditional and unconditional passes run as one batch. `scale` is an array, so changing
it does not recompile. (DiT guides only 3 of 4 latent channels, a known bug: here every channel is.)
The model may return a pytree (Cas-DM's (eps_hat, x0_hat)): every leaf is guided alike.
"""
import jax
import jax.numpy as jnp


def classifier_free(model, labels, null_label: int, scale):
    """model(x, logsnr, labels) -> x0_hat (or a pytree of per-row outputs); returns
    denoise(x, logsnr) with guidance applied."""
    def denoise(x, logsnr):
        n = x.shape[0]
        both = model(jnp.concatenate([x, x]), logsnr,
                     jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
        return jax.tree.map(lambda b: b[n:] + scale * (b[:n] - b[n:]), both)
    return denoise
