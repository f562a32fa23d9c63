"""The routed-LM scaling law (netlab/moe/scaling_law.py, Clark et al. 2022): the fit recovers the
coefficients of data generated from the law, Ê saturates, and N̄(N, 1) = N."""

import numpy as np
import pytest

from netlab.errors import UserError
from netlab.moe import scaling_law as S

TRUE = S.Law(a=-0.082, b=-0.108, c=0.009, d=2.3)


def _grid(ns, es):
    n, e = np.meshgrid(ns, es, indexing="ij")
    return n.ravel(), e.ravel()


def test_fit_recovers_known_coefficients():
    n, e = _grid([1e5, 4e5, 1.6e6], [1, 2, 4, 8])  # the bench's grid shape
    law, rms = S.fit(n, e, TRUE.loss(n, e))
    np.testing.assert_allclose(
        [law.a, law.b, law.c, law.d], [-0.082, -0.108, 0.009, 2.3], atol=1e-9
    )
    assert rms < 1e-12
    # with noise of std s on log L the coefficients move by about s x their standard error
    rng = np.random.default_rng(0)
    noisy = TRUE.loss(n, e) * np.exp(1e-4 * rng.normal(size=n.shape))
    law, rms = S.fit(n, e, noisy)
    assert 2e-5 < rms < 1e-4  # log10 of a 1e-4 relative noise: 4.3e-5
    np.testing.assert_allclose([law.a, law.b, law.c], [-0.082, -0.108, 0.009], atol=5e-3)
    # a wide E range identifies the saturation too (variable projection)
    n, e = _grid([1e6, 1e7, 1e8, 1e9], [1, 2, 4, 8, 32, 128, 512, 2048])
    law, rms = S.fit(n, e, TRUE.loss(n, e), e_start=3.0, e_max=100.0, fit_saturation=True)
    np.testing.assert_allclose([law.e_start, law.e_max], [S.E_START, S.E_MAX], rtol=1e-3)
    np.testing.assert_allclose([law.a, law.b, law.c], [-0.082, -0.108, 0.009], atol=1e-4)


def test_saturation_and_effective_parameters():
    e = np.array([1, 2, 4, 16, 256, 1e6, 1e12])
    eh = S.e_hat(e)
    assert eh[0] == pytest.approx(S.E_START) and np.all(np.diff(eh) > 0)
    assert eh[-1] == pytest.approx(S.E_MAX, rel=1e-6)
    n = np.array([1e6, 1e8])
    np.testing.assert_allclose(TRUE.effective_params(n, 1), n, rtol=1e-12)
    nbar = TRUE.effective_params(n, 64)
    np.testing.assert_allclose(TRUE.loss(nbar, 1), TRUE.loss(n, 64), rtol=1e-12)
    assert np.all(nbar > n) and nbar[0] / n[0] > nbar[1] / n[1]  # c > 0: gains shrink with N
    assert 1e11 < TRUE.cutoff() < 1e13
    np.testing.assert_allclose(TRUE.loss(TRUE.cutoff(), [2, 64]), TRUE.loss(TRUE.cutoff(), 1))
    with pytest.raises(UserError, match="need >= 4"):
        S.fit([1, 2], [1, 2], [3.0, 2.0])
