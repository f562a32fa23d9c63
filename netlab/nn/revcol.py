"""Reversible columns: Cai et al. 2023, "Reversible Column Networks" (RevCol, ICLR).

RevCol runs N columns over the same input x_0, each with L levels, and joins consecutive columns
by multi-level reversible connections. Level j of column i reads level j-1 of its own column and
level j+1 of the previous column, and adds a scaled copy of level j of the previous column:

    x^i_j = F_j(x^i_{j-1}, x^{i-1}_{j+1}) + gamma_j * x^{i-1}_j          (x^i_0 = x_0)

The previous column is recovered from the current one, top level first (level j needs
x^{i-1}_{j+1}, just recovered):

    x^{i-1}_j = (x^i_j - F_j(x^i_{j-1}, x^{i-1}_{j+1})) / gamma_j

so, as in RevNet (`netlab.nn.reversible`), the backward pass keeps only the last column and
recomputes each earlier column from the next one (`revcol_sequence`, a `jax.custom_vjp`): the
activation memory does not grow with the number of columns. Column 0's "previous column" is zero.

Simplifications, deliberately: every level has the same shape (the paper's levels are the
resolutions of a ConvNet, joined by up/down-sampling fusion modules, which F_j would contain);
the top level reads zeros as its missing upper input; gamma_j is a learned per-channel scale that
must stay away from zero (the paper clamps |gamma| >= 1e-3; here it is the caller's parameter).

`revcol_scan` / `plain_columns_scan` run columns of one structure (parameters stacked on a leading
column axis) as a `lax.scan` whose backward is a reverse scan: a loop reuses one column's buffers,
where XLA:CPU keeps part of every unrolled column's (bench/results/reversible_memory.md).

`fns` is a tuple of L level functions `F_j(params, lower, upper) -> x`; `params[i][j]` is a dict
with F_j's parameters of column i under "f" and its gamma under "gamma".
"""

import functools

import jax
import jax.numpy as jnp


def column(fns, params_i, x0, prev):
    """One column: the tuple of its L levels from x_0 and the previous column's levels."""
    out, lower = [], x0
    for j, f in enumerate(fns):
        upper = prev[j + 1] if j + 1 < len(fns) else jnp.zeros_like(prev[j])
        lower = f(params_i[j]["f"], lower, upper) + params_i[j]["gamma"] * prev[j]
        out.append(lower)
    return tuple(out)


def column_inverse(fns, params_i, x0, cur):
    """The previous column's levels from this column's, top level first."""
    prev = [None] * len(fns)
    for j in reversed(range(len(fns))):
        lower = cur[j - 1] if j else x0
        upper = prev[j + 1] if j + 1 < len(fns) else jnp.zeros_like(cur[j])
        prev[j] = (cur[j] - fns[j](params_i[j]["f"], lower, upper)) / params_i[j]["gamma"]
    return tuple(prev)


def plain_columns(fns, params, x0, levels):
    """All columns with ordinary autodiff; `levels` is column 0's previous column (zeros)."""
    for p in params:
        levels = column(fns, p, x0, levels)
    return levels


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def revcol_sequence(fns, params, x0, levels):
    """`plain_columns` whose gradient recomputes every column from the next one."""
    return plain_columns(fns, params, x0, levels)


def _fwd(fns, params, x0, levels):
    out = plain_columns(fns, params, x0, levels)
    return out, (params, x0, out)


def _bwd(fns, res, d_out):
    params, x0, cur = res
    d_cur, dx0, grads = d_out, jnp.zeros_like(x0), []
    for p in reversed(params):
        prev = column_inverse(fns, p, x0, cur)
        _, vjp = jax.vjp(lambda p, x0, prev: column(fns, p, x0, prev), p, x0, prev)
        dp, dx, d_prev = vjp(d_cur)
        grads.append(dp)
        dx0 = dx0 + dx
        cur, d_cur = prev, d_prev
    return tuple(reversed(grads)), dx0, d_cur


revcol_sequence.defvjp(_fwd, _bwd)


def plain_columns_scan(fns, stacked, x0, levels):
    """`plain_columns` over parameters stacked on a leading column axis, as a scan."""
    return jax.lax.scan(lambda cur, p: (column(fns, p, x0, cur), None), levels, stacked)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def revcol_scan(fns, stacked, x0, levels):
    """`plain_columns_scan` whose gradient is a reverse scan recomputing each previous column."""
    return plain_columns_scan(fns, stacked, x0, levels)


def _scan_fwd(fns, stacked, x0, levels):
    out = plain_columns_scan(fns, stacked, x0, levels)
    return out, (stacked, x0, out)


def _scan_bwd(fns, res, d_out):
    stacked, x0, cur = res

    def body(carry, p):
        cur, d_cur, dx0 = carry
        prev = column_inverse(fns, p, x0, cur)
        _, vjp = jax.vjp(lambda p, x0, prev: column(fns, p, x0, prev), p, x0, prev)
        dp, dx, d_prev = vjp(d_cur)
        return (prev, d_prev, dx0 + dx), dp

    init = (cur, d_out, jnp.zeros_like(x0))
    (_, d_levels, dx0), grads = jax.lax.scan(body, init, stacked, reverse=True)
    return grads, dx0, d_levels


revcol_scan.defvjp(_scan_fwd, _scan_bwd)
