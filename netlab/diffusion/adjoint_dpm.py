"""AdjointDPM: gradients through diffusion sampling by the adjoint sensitivity method (Pan, Liew,
Tan, Feng & Yan, ICLR 2024, "Adjoint sensitivity method for gradient backpropagation of
diffusion probabilistic models").

The deterministic sampler is the probability-flow ODE; a loss L on its output x_0 has gradients
with respect to the initial noise x_T, the denoiser's parameters and its conditioning that the
continuous adjoint gives by one backward ODE solve, at memory constant in the number of steps
(the paper's Sec. 3; Chen et al. 2018, Alg. 1). We reuse the shared core's adjoint
(`netlab.nn.ode.odeint_adjoint`) on the PF-ODE in VE coordinates y = x / alpha with
u = log sigma_ve = -logsnr / 2:

    dy/du = y - x0_hat(alpha y, logsnr; theta)

(the paper reparameterises the same ODE in rho = sigma/alpha = e^u with eps-prediction,
dy/drho = eps_hat, and integrates both it and its adjoint with exponential integrators; we use
the core's fixed-step Runge-Kutta methods in u instead, so our gradients equal backpropagation
through the same solver up to its discretisation error, not the paper's exact numbers).

`denoise(x, logsnr, theta) -> x0_hat` must take everything differentiable (network parameters,
class embedding, guidance scale...) in the pytree `theta`: the adjoint cannot see values the
function closes over.
"""

from __future__ import annotations

from netlab.diffusion.schedules import alpha_sigma
from netlab.nn import ode


def sample(
    denoise,
    x_T,
    theta,
    l_from,
    l_to,
    num_steps: int,
    method: str = "rk4",
    gradient: str = "adjoint",
):
    """x at log-SNR `l_to` of the PF-ODE through x_T at `l_from` with `num_steps` equal steps of
    `method` in u; differentiable in x_T and theta by `gradient` ("adjoint" | "backprop")."""
    a_from, _ = alpha_sigma(l_from)
    a_to, _ = alpha_sigma(l_to)

    def f(u, y, theta):
        logsnr = -2.0 * u
        a, _ = alpha_sigma(logsnr)
        return y - denoise(a * y, logsnr, theta).astype(y.dtype)

    y = ode.solve(
        f,
        x_T / a_from,
        -0.5 * l_from,
        -0.5 * l_to,
        theta,
        method=method,
        num_steps=num_steps,
        gradient=gradient,
    )
    return a_to * y
