"""TAN accounting (Sander et al. 2023) and the sampled-Gaussian RDP accountant (Mironov et al.
2019): published (eps, delta) values, the q = 1 closed form, and TAN's eta-invariance."""

import numpy as np
import pytest

from netlab.errors import UserError
from netlab.train import tan

N, BATCH = 60_000, 256


@pytest.mark.parametrize(
    "sigma,epochs,published",
    # TensorFlow Privacy, tutorials/README.md "Select Parameters" table (MNIST, N = 60000,
    # batch 256, delta = 1e-5, its RDP accountant with the classic conversion). Tolerance 1%:
    # the table rounds to 2 decimals and that accountant also tried fractional orders.
    [(1.12, 60, 2.92), (0.6, 30, 9.74), (1.2, 10, 1.20)],
)
def test_reproduces_tensorflow_privacy_published_epsilons(sigma, epochs, published):
    steps = int(epochs * N / BATCH)
    eps, _ = tan.epsilon(BATCH / N, sigma, steps, 1e-5, conversion="classic")
    assert eps == pytest.approx(published, rel=0.01)
    improved, _ = tan.epsilon(BATCH / N, sigma, steps, 1e-5)
    assert improved < eps  # Balle et al. 2020's conversion is never looser


def test_full_batch_is_the_gaussian_mechanism():
    alphas = np.arange(2, 40)
    np.testing.assert_allclose(
        tan.rdp_sampled_gaussian(1.0, 1.7, alphas), alphas / (2 * 1.7**2), rtol=1e-12
    )


def test_same_total_amount_of_noise_gives_about_the_same_epsilon():
    """Sander et al. 2023, Sec. 3: at sigma >= 2, (k sigma, k q, S) keeps eta and (about) eps;
    at sigma < 1 it does not."""
    q, sigma, steps = 1024 / 1_281_167, 0.625, 18_000
    eps = {k: tan.epsilon(k * q, k * sigma, steps, 1e-6)[0] for k in (1, 4, 8)}
    eta = {k: tan.total_amount_of_noise(k * sigma, k * q, steps) for k in (1, 4, 8)}
    assert eta[1] == pytest.approx(eta[8])
    assert abs(eps[8] / eps[4] - 1) < 0.05
    assert eps[1] > 2 * eps[4]
    assert tan.scale_batch(8 * sigma, 8192, 8) == (sigma, 1024)
    with pytest.raises(UserError):
        tan.scale_batch(1.0, 100, 8)
