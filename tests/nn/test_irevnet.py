"""i-RevNet (Jacobsen et al. 2018): the explicit inverse recovers the input, for the bijective and
the injective (zero-padded) network; the down-sampling S stacks 2x2 blocks into channels."""

import flax.linen as nn
import jax
import numpy as np

from netlab.nn import irevnet

RNG = np.random.default_rng(0)


def test_invertible_downsample_stacks_blocks_into_channels():
    x = RNG.normal(size=(1, 4, 6, 3)).astype(np.float32)
    down = np.asarray(irevnet.invertible_downsample(x))
    assert down.shape == (1, 2, 3, 12)
    for i, j, a, b, c in np.ndindex(2, 3, 2, 2, 3):
        assert down[0, i, j, (2 * a + b) * 3 + c] == x[0, 2 * i + a, 2 * j + b, c]
    np.testing.assert_array_equal(irevnet.invertible_upsample(down), x)


def test_inverse_recovers_the_input():
    x = RNG.normal(size=(2, 8, 8, 1)).astype(np.float32)
    nets = [irevnet.IRevNet((1, 2, 1), hidden=8), irevnet.IRevNet((2,), 8, pad_channels=1)]
    variables = []
    for net in nets:
        shapes = nn.unbox(jax.eval_shape(net.init, jax.random.key(0), x))
        variables.append(jax.tree.map(lambda s: RNG.normal(0, 0.3, s.shape), shapes))

    @jax.jit
    def run(variables):
        out = []
        for net, v in zip(nets, variables):
            z = net.apply(v, x)
            out.append((z, net.apply(v, z, method="inverse")))
        return out

    (z, back), (zi, backi) = run(variables)
    assert z.shape == (2, 2, 2, 16)  # bijective: as many numbers as the input
    assert zi.shape == (2, 2, 2, 32)  # injective: one zero channel padded before S~
    assert not np.allclose(np.sort(z.ravel()), np.sort(x.ravel()))  # F did contribute
    np.testing.assert_allclose(back, x, atol=1e-5)
    np.testing.assert_allclose(backi, x, atol=1e-5)
