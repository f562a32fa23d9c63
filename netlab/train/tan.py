"""DP-SGD privacy accounting and TAN's noise bookkeeping: Sander, Stock & Sablayrolles 2023, "TAN
Without a Burn: Scaling Laws of DP-SGD" (ICML); the accountant of Mironov, Talwar & Zhang 2019,
"Renyi Differential Privacy of the Sampled Gaussian Mechanism" (arXiv:1908.10530).

DP-SGD (`netlab.train.dpsgd`) samples each example with probability q = B / N (Poisson), clips
per-example gradients to norm C and adds N(0, sigma^2 C^2) noise to their sum, for S steps.

Accountant (host-side numpy, no dependency: neither `dp_accounting` nor `opacus` is installed):

- `rdp_sampled_gaussian(q, sigma, alphas)`: the Renyi-DP of one step at integer orders alpha,
  Mironov et al. 2019 (their exact expression for integer alpha):
      A_alpha = sum_{k=0}^{alpha} binom(alpha, k) (1 - q)^(alpha - k) q^k
                exp((k^2 - k) / (2 sigma^2))
      rdp(alpha) = log(A_alpha) / (alpha - 1)
  summed in log space; q = 1 gives the Gaussian mechanism's alpha / (2 sigma^2).
- RDP composes additively over the S steps (Mironov 2017, Prop. 1).
- `epsilon(...)`: the (eps, delta) conversion minimised over the orders, either Mironov 2017,
  Prop. 3, eps = rdp + log(1 / delta) / (alpha - 1) (`conversion="classic"`, the one behind
  TensorFlow Privacy's published tutorial table that the test reproduces) or the tighter
  Balle et al. 2020, "Hypothesis Testing Interpretations and Renyi DP", Thm. 21:
  eps = rdp + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1) (`"improved"`,
  the default; what Opacus's RDP accountant uses). Orders here are integers only (2 .. 256 and a
  few larger), so the result is an upper bound that can be slightly above an accountant that
  also tries fractional orders.

TAN (Sander et al. 2023):
- `total_amount_of_noise(sigma, q, steps)`: eta = sigma / (q sqrt(S)) (the paper's definition).
  For sigma large enough (the paper: about sigma >= 2) the RDP of S steps is close to
  S q^2 alpha / sigma^2 (Abadi et al. 2016, Lemma 3), which depends on (sigma, q, S) through eta
  only, so eps is (almost) a function of eta: scaling sigma and B by the same k keeps the privacy.
- `scale_batch(sigma, batch, k)`: the paper's low-compute simulation rule: train with
  batch B / k and noise sigma / k, so the noise on the averaged gradient sigma C / B (`dpsgd.
  noise_std`) and the step count stay those of the large run; the small run's hyperparameters then
  transfer to the large, private one (whose privacy is the large run's, not the small one's).
"""

import math

import numpy as np

from netlab.errors import UserError

ORDERS = (*range(2, 257), 320, 384, 512, 768, 1024)
CONVERSIONS = ("improved", "classic")


def rdp_sampled_gaussian(q: float, sigma: float, alphas=ORDERS) -> np.ndarray:
    """One step's Renyi-DP at each integer order in `alphas` (Mironov et al. 2019)."""
    from scipy.special import gammaln, logsumexp  # lazily: ~0.35 s of import

    if not 0 < q <= 1 or sigma <= 0:
        raise UserError(f"q={q}, sigma={sigma}: need 0 < q <= 1 and sigma > 0")
    out = []
    for a in alphas:
        a = int(a)
        k = np.arange(a + 1, dtype=np.float64)
        log_binom = gammaln(a + 1) - gammaln(k + 1) - gammaln(a - k + 1)
        if q == 1:  # only the k = alpha term survives
            log_terms = np.where(k == a, 0.0, -np.inf) + (k * k - k) / (2 * sigma**2)
        else:
            log_terms = log_binom + (a - k) * math.log1p(-q) + k * math.log(q)
            log_terms = log_terms + (k * k - k) / (2 * sigma**2)
        out.append(logsumexp(log_terms) / (a - 1))
    return np.asarray(out)


def epsilon(q, sigma, steps, delta, alphas=ORDERS, conversion: str = "improved"):
    """(eps, best order) of `steps` DP-SGD steps at sampling rate q and noise multiplier sigma."""
    if conversion not in CONVERSIONS:
        raise UserError(f"conversion={conversion!r}; choose one of {', '.join(CONVERSIONS)}")
    a = np.asarray(alphas, np.float64)
    rdp = steps * rdp_sampled_gaussian(q, sigma, alphas)
    if conversion == "classic":
        eps = rdp + math.log(1 / delta) / (a - 1)
    else:
        eps = rdp + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    i = int(np.argmin(eps))
    return max(float(eps[i]), 0.0), int(a[i])


def total_amount_of_noise(sigma: float, q: float, steps: int) -> float:
    """TAN's eta = sigma / (q sqrt(S)) (Sander et al. 2023)."""
    return sigma / (q * math.sqrt(steps))


def scale_batch(sigma: float, batch: int, k: float):
    """(sigma / k, batch / k): the same noise on the averaged gradient at a k-times smaller batch
    (Sander et al. 2023), for tuning at a fraction of the compute."""
    if batch % k:
        raise UserError(f"batch={batch} is not divisible by k={k}: pick k dividing the batch")
    return sigma / k, int(batch // k)
