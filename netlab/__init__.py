"""netlab: diffusion, Mixture-of-Experts and graph networks in JAX/Flax, from a laptop to a TPU pod."""  # noqa: E501

__version__ = "0.1.0"
