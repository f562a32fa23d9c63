"""netlab: diffusion, Mixture-of-Experts and graph networks in JAX/Flax, from a laptop to a TPU pod."""

__version__ = "0.1.0"
