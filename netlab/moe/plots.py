"""Routing pictures as uint8 arrays (matplotlib Agg): per-layer expert-load histograms and
token-to-expert heatmaps."""

import numpy as np


def _figure_to_array(fig) -> np.ndarray:
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def expert_load_histograms(fractions) -> np.ndarray:
    """fractions: list (one per MoE layer) of (E,) shares of assignments; dashed line = balanced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fractions)
    fig, axs = plt.subplots(1, n, figsize=(3.2 * n, 2.6), squeeze=False)
    for i, f in enumerate(fractions):
        f = np.asarray(f, np.float64)
        ax = axs[0, i]
        ax.bar(np.arange(len(f)), f, color="tab:blue")
        ax.axhline(1.0 / len(f), color="k", ls="--", lw=1)
        ax.set_title(f"MoE layer {i}", fontsize=9)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_ylim(0, max(0.01, float(f.max()) * 1.15))
    axs[0, 0].set_ylabel("share of tokens", fontsize=8)
    fig.tight_layout()
    return _figure_to_array(fig)


def token_expert_heatmaps(gates, labels=None) -> np.ndarray:
    """gates: list (one per MoE layer) of (S, E) combine weights of one sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(gates)
    s = np.asarray(gates[0]).shape[0]
    fig, axs = plt.subplots(n, 1, figsize=(max(4.0, 0.12 * s + 1), 1.6 * n + 0.6), squeeze=False)
    for i, g in enumerate(gates):
        ax = axs[i, 0]
        ax.imshow(
            np.asarray(g, np.float64).T, aspect="auto", cmap="viridis", interpolation="nearest"
        )
        ax.set_ylabel(f"L{i} expert", fontsize=8)
        if labels is not None and i == n - 1:
            ax.set_xticks(np.arange(len(labels)))
            ax.set_xticklabels(labels, fontsize=6, family="monospace")
        else:
            ax.set_xticks([])
    fig.tight_layout()
    return _figure_to_array(fig)
