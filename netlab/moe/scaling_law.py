"""The scaling law of routed language models: Clark, de las Casas, Guy, Mensch et al., ICML 2022,
"Unified Scaling Laws for Routed Language Models" (arXiv 2202.01169).

Validation loss as a function of the dense model size N (parameters of the model every token goes
through) and the number of experts E (the paper's Eq. 1, with the saturating expert count Ê the
paper uses in its fits; the exact form of Ê is from our notes, not re-checked against the text):

    log L(N, E) = a log N + b log Ê + c log N log Ê + d          (log = log10)
    1 / Ê       = 1 / (E - 1 + (1 / E_start - 1 / E_max)^-1) + 1 / E_max

Ê grows like E for small E and saturates at E_max (adding experts stops helping); c > 0 means the
benefit of experts shrinks as N grows. The effective parameter count N̄ of a routed model is the
size of the dense model with the same loss, L(N̄, 1) = L(N, E):

    log N̄ = [(a + c log Ê(E)) log N + b (log Ê(E) - log Ê(1))] / (a + c log Ê(1))

Logarithms are base 10: with the recalled S-BASE constants below, experts stop helping
(b + c log N = 0) at N_cutoff = 10^(-b/c) ~ 1e12 parameters, while natural logarithms would put
the cutoff at 1.6e5 parameters, below every model in the paper. The base changes c and d only.

For fixed (E_start, E_max) the law is linear in (a, b, c, d): `fit` solves it by least squares,
and with `fit_saturation=True` it also searches (E_start, E_max) (variable projection: the inner
problem stays linear). The paper's S-BASE constants (a ~ -0.082, b ~ -0.108, c ~ 0.009,
E_start ~ 1.85, E_max ~ 314, as recalled in our notes, not re-derived) are the defaults for the
saturation, which a small grid (E <= 8) cannot identify.
"""

import dataclasses

import numpy as np

from netlab.errors import UserError

E_START, E_MAX = 1.85, 314.0  # S-BASE (Clark et al. 2022), as recalled: see the module docstring


@dataclasses.dataclass(frozen=True)
class Law:
    a: float
    b: float
    c: float
    d: float
    e_start: float = E_START
    e_max: float = E_MAX

    def e_hat(self, e):
        return e_hat(e, self.e_start, self.e_max)

    def log_loss(self, n, e):
        ln, le = np.log10(np.asarray(n, float)), np.log10(self.e_hat(e))
        return self.a * ln + self.b * le + self.c * ln * le + self.d

    def loss(self, n, e):
        return 10.0 ** self.log_loss(n, e)

    def cutoff(self) -> float:
        """N_cutoff = 10^(-b/c): the dense size beyond which experts stop lowering the loss."""
        return 10.0 ** (-self.b / self.c)

    def effective_params(self, n, e):
        """N̄: the dense size with the loss of (N, E)."""
        le, le1 = np.log10(self.e_hat(e)), np.log10(self.e_hat(1.0))
        ln = np.log10(np.asarray(n, float))
        return 10.0 ** (
            ((self.a + self.c * le) * ln + self.b * (le - le1)) / (self.a + self.c * le1)
        )


def e_hat(e, e_start: float = E_START, e_max: float = E_MAX):
    """The saturating expert count Ê(E): Ê(1) = E_start, increasing, -> E_max as E -> inf."""
    if not 1.0 < e_start < e_max:
        raise UserError(f"e_start={e_start}, e_max={e_max}: expected 1 < e_start < e_max")
    e = np.asarray(e, float)
    return 1.0 / (1.0 / (e - 1.0 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max)


def _design(n, e, e_start, e_max):
    ln, le = np.log10(np.asarray(n, float)), np.log10(e_hat(e, e_start, e_max))
    return np.stack([ln, le, ln * le, np.ones_like(ln)], -1)


def _linear(n, e, log_l, e_start, e_max):
    coef, *_ = np.linalg.lstsq(_design(n, e, e_start, e_max), log_l, rcond=None)
    resid = _design(n, e, e_start, e_max) @ coef - log_l
    return coef, float(np.sum(resid**2))


def fit(n, e, loss, e_start=E_START, e_max=E_MAX, fit_saturation=False) -> tuple:
    """Least-squares fit of log L to the law on runs (n[i], e[i], loss[i]).
    -> (Law, rms residual of log10 L). `fit_saturation`: also fit E_start, E_max (needs a wide E
    range), starting from the given values."""
    n, e, log_l = (np.asarray(v, float).ravel() for v in (n, e, loss))
    log_l = np.log10(log_l)
    if not (len(n) == len(e) == len(log_l) >= 4):
        raise UserError(f"scaling-law fit: {len(log_l)} runs; need >= 4 (N, E, loss) triples")
    if len(set(n)) < 2 or len(set(e)) < 2:
        raise UserError("scaling-law fit: need at least 2 distinct N and 2 distinct E")
    if fit_saturation:
        from scipy.optimize import minimize

        def objective(z):  # z = (log(E_start - 1), log(E_max - E_start))
            s = 1.0 + np.exp(z[0])
            return _linear(n, e, log_l, s, s + np.exp(z[1]))[1]

        z0 = np.log([e_start - 1.0, e_max - e_start])
        z = minimize(objective, z0, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-16))
        e_start = 1.0 + float(np.exp(z.x[0]))
        e_max = e_start + float(np.exp(z.x[1]))
    coef, sse = _linear(n, e, log_l, e_start, e_max)
    law = Law(*map(float, coef), e_start=e_start, e_max=e_max)
    return law, float(np.sqrt(sse / len(log_l)))
