"""NAT (Luo & Li, LoG 2022, "Neighborhood-aware Scalable Temporal Network Representation
Learning"): link prediction on event streams from dictionary-type neighbourhood representations.

State per node u (fixed-size arrays, so the whole stream runs in one ``lax.scan``):

- a self representation s_u [self_dim], updated by a GRU on u's events (paper Sec. 4.1);
- N-caches (Sec. 4.2): hop 0 is u's own entry; hop h = 1, 2 is a dictionary of ``cache_sizes[h-1]``
  slots, each holding (neighbour id, time, a small neighbour representation [ngh_dim]). A key a
  lives only in slot hash(a) mod M with the authors' hash hash(a) = a (s mod 100) + a^2 (s mod 100
  + 1), s = ``hash_seed`` (computed from a mod M, so it never overflows). Writing a into a slot
  held by another key replaces it with probability ``replace_prob`` (alpha, the down-sampling),
  else the write is dropped; O(1) per write, O(M) per read.

Scoring the link (u, v, t) with the state from before the batch (TGN's protocol):

- read (:meth:`NAT.read`): every entry's stored representation is refreshed by a GRU whose input is
  W [s_a ‖ phi(t - t_slot)] (phi: TGN's cosine time encoding), and zeroed on empty slots;
- joint features (Sec. 4.3): for every entry of u's and v's caches, the sum over the entries of
  both dictionaries that hold the same node id of [representation, position code], the code being
  bit h of the hop for u's side and bit h + 3 for v's side, so the summed code (< 64) says in which
  hops of u and of v that node appears (a common neighbour: bits 1 and 4), embedded in ``pos_dim``;
- each distinct node is pooled once by multi-head attention with a learned query, and an MLP on
  [pooled ‖ s_u ‖ s_v] gives the logit. ``use_neighbourhood=False`` drops the pooled term (the
  no-neighbourhood ablation: self representations only).

Updating with the batch's events (:meth:`NAT.update`, every write reads the pre-batch caches):
for (x, y) in both directions of each event, x's hop-1 cache gets (y, t, y's refreshed
representation in that slot, or 0 when the slot held another key); y's hop-2 cache gets x's
hop-1 entries; x's hop-0 entry takes t and its refreshed representation; s_x <- GRU(W [s_y ‖ e ‖
phi(t - t_x)], s_x) from x's last event of the batch. Writes to the same slot within a batch: the
last accepted one in batch order wins (:func:`cache_write`). The replacement draws come from a key
in the state, split once per batch.

Where we differ from the authors' code (``module.py``): theirs updates s lazily at the node's next
batch from the stored previous event and encodes absolute timestamps; here the update is applied
after the batch and time enters as the elapsed time (the same information, no absolute clock).
Entries store no edge features. Their replacement test ``rand * occupied < alpha`` never writes
an empty slot when alpha = 0; here an empty slot (or one holding the same key) is always written.
Their GAT pooling over the distinct nodes is attention pooling with a learned query here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netlab.graph.registries import MODELS
from netlab.graph.tgn import time_init
from netlab.registry import check_range

CODE_BITS = 3  # hop bits per side: hops 0, 1, 2


def cache_hash(key, size: int, seed: int):
    """NAT's slot hash(a) = a (s mod 100) + a^2 (s mod 100 + 1) mod M, from a mod M (exact)."""
    s = seed % 100
    a = jnp.asarray(key) % size
    return (a * s + a * a * (s + 1)) % size


def cache_write(ids, times, reps, owner, key, key_t, payload, valid, u, alpha, seed):
    """Write entries (key, key_t, payload) into the caches of ``owner`` (all [W]).

    ids [N, M] int32 (-1 empty), times [N, M], reps [N, M, R]. A write to slot hash(key) is
    accepted when the valid slot is empty or holds ``key``, or when u < alpha; among the accepted
    writes to one slot the last one (largest index) wins. Occupancy is read before any write.
    """
    n, m = ids.shape
    slot = cache_hash(key, m, seed)
    cur = ids[owner, slot]
    other = (cur >= 0) & (cur != key)
    accept = valid & (~other | (u < alpha))
    flat = jnp.where(accept, owner * m + slot, n * m)
    order = jnp.arange(key.shape[0])
    best = jax.ops.segment_max(jnp.where(accept, order, -1), flat, n * m + 1)
    win = accept & (best[flat] == order)
    row = jnp.where(win, owner, n)  # losers go to a dropped row
    return (
        ids.at[row, slot].set(key.astype(ids.dtype), mode="drop"),
        times.at[row, slot].set(key_t, mode="drop"),
        reps.at[row, slot].set(payload, mode="drop"),
    )


def write_draws(rng, num_events: int, cache_sizes):
    """(next rng, uniform draws of the hop-1 and hop-2 writes of a batch of ``num_events``)."""
    rng, sub = jax.random.split(rng)
    u1 = jax.random.uniform(jax.random.fold_in(sub, 1), (2 * num_events,))
    m1 = cache_sizes[0] if cache_sizes else 0
    u2 = jax.random.uniform(jax.random.fold_in(sub, 2), (2 * num_events * m1,))
    return rng, u1, u2


@MODELS.register("nat")
class NAT(nn.Module):
    """NAT's self representations, N-caches and joint-neighbourhood link decoder."""

    TASK = "temporal"

    num_nodes: int
    self_dim: int = 32
    ngh_dim: int = 8
    time_dim: int = 8
    cache_sizes: tuple = (32, 16)
    replace_prob: float = 0.9
    hash_seed: int = 1
    pos_dim: int = 16
    heads: int = 2
    edge_dim: int = 0
    use_neighbourhood: bool = True
    seed: int = 0  # of the replacement draws
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_range("model.self_dim", self.self_dim, 1, None, integer=True)
        check_range("model.ngh_dim", self.ngh_dim, 1, None, integer=True)
        check_range("model.replace_prob", self.replace_prob, 0.0, 1.0)
        check_range("model.len(cache_sizes)", len(self.cache_sizes), 0, CODE_BITS - 1)
        for i, m in enumerate(self.cache_sizes):
            check_range(f"model.cache_sizes[{i}]", m, 1, None, integer=True)
        super().__post_init__()

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.time_w = self.param("time_w", time_init, (self.time_dim,), self.param_dtype)
        self.time_b = self.param(
            "time_b", nn.initializers.zeros, (self.time_dim,), self.param_dtype
        )
        self.self_in = nn.Dense(self.self_dim, use_bias=False, **kw)
        self.self_gru = nn.GRUCell(self.self_dim, **kw)
        self.ngh_in = nn.Dense(self.ngh_dim, use_bias=False, **kw)
        self.ngh_gru = nn.GRUCell(self.ngh_dim, **kw)
        self.pos_embed = nn.Embed(1 << (2 * CODE_BITS), self.pos_dim, **kw)
        width = self.ngh_dim + self.pos_dim
        init = nn.initializers.normal(1.0)
        self.query = self.param("query", init, (1, 1, width), self.param_dtype)
        self.att = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=width, out_features=width, **kw
        )
        self.out_hidden = nn.Dense(width + 2 * self.self_dim, **kw)
        self.out = nn.Dense(1, **kw)

    def time_enc(self, dt):
        """TGN's phi(dt) = cos(w dt + b) (``netlab.graph.tgn.TimeEncoding``), in ``param_dtype``."""
        return jnp.cos(dt[..., None] * self.time_w + self.time_b)

    def init_state(self) -> dict:
        n, f = self.num_nodes, self.dtype or jnp.float32
        state = {
            "self": jnp.zeros((n, self.self_dim), f),
            "last_update": jnp.zeros((n,), f),
            "c0_t": jnp.zeros((n,), f),
            "c0_rep": jnp.zeros((n, self.ngh_dim), f),
            "rng": jax.random.key_data(jax.random.key(self.seed)),
        }
        for h, m in enumerate(self.cache_sizes, 1):
            state[f"c{h}_id"] = jnp.full((n, m), -1, jnp.int32)
            state[f"c{h}_t"] = jnp.zeros((n, m), f)
            state[f"c{h}_rep"] = jnp.zeros((n, m, self.ngh_dim), f)
        return state

    def refresh(self, state, ids, t_slot, rep, t):
        """Stored representations brought to time t: GRU(W [s_a ‖ phi(t - t_slot)], rep)."""
        valid = ids >= 0
        x = jnp.concatenate(
            [state["self"][jnp.maximum(ids, 0)], self.time_enc(t[:, None] - t_slot)], -1
        )
        shape = rep.shape
        new, _ = self.ngh_gru(rep.reshape(-1, shape[-1]), self.ngh_in(x).reshape(-1, shape[-1]))
        return jnp.where(valid[..., None], new.reshape(shape), 0.0)

    def read(self, state, nodes, t):
        """Per node: entry ids [B, K] (-1 empty), hops [K], refreshed representations [B, K, R]."""
        ids = [nodes[:, None]]
        times = [state["c0_t"][nodes][:, None]]
        reps = [state["c0_rep"][nodes][:, None]]
        hops = [np.zeros(1, np.int32)]
        for h, m in enumerate(self.cache_sizes, 1):
            ids.append(state[f"c{h}_id"][nodes])
            times.append(state[f"c{h}_t"][nodes])
            reps.append(state[f"c{h}_rep"][nodes])
            hops.append(np.full(m, h, np.int32))
        ids = jnp.concatenate(ids, 1)
        rep = self.refresh(state, ids, jnp.concatenate(times, 1), jnp.concatenate(reps, 1), t)
        return ids, np.concatenate(hops), rep

    def joint(self, a, b):
        """Pooled joint-neighbourhood feature [B, R + pos_dim] of the pairs of two reads."""
        (ids_a, hops, rep_a), (ids_b, _, rep_b) = a, b
        ids = jnp.concatenate([ids_a, ids_b], 1)
        rep = jnp.concatenate([rep_a, rep_b], 1)
        code = jnp.asarray(np.concatenate([1 << hops, 1 << (hops + CODE_BITS)]), jnp.int32)
        valid = ids >= 0
        same = (ids[:, :, None] == ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        sum_rep = jnp.einsum("bkj,bjr->bkr", same.astype(rep.dtype), rep)
        sum_code = jnp.sum(jnp.where(same, code, 0), -1)
        earlier = jnp.tril(jnp.ones(same.shape[1:], bool), -1)
        first = valid & ~jnp.any(same & earlier, -1)  # each distinct node once
        x = jnp.concatenate([sum_rep, self.pos_embed(sum_code)], -1)
        q = jnp.broadcast_to(self.query, (x.shape[0], 1, x.shape[-1]))
        return self.att(q, x, x, mask=first[:, None, None, :])[:, 0]

    def score(self, state, read_a, read_b, s_a, s_b):
        pooled = self.joint(read_a, read_b)
        if not self.use_neighbourhood:
            pooled = jnp.zeros_like(pooled)
        h = nn.relu(self.out_hidden(jnp.concatenate([pooled, s_a, s_b], -1)))
        return self.out(h)[..., 0]

    def update(self, state, batch, read_src, read_dst):
        """The batch's cache writes and self-representation updates (module docstring)."""
        src, dst, t, mask = batch["src"], batch["dst"], batch["t"], batch["mask"]
        bsz = src.shape[0]
        rng, u1, u2 = write_draws(state["rng"], bsz, self.cache_sizes)
        new = {**state, "rng": rng}
        # Interleaved (src_k <- dst_k, dst_k <- src_k), as TGN's messages.
        x = jnp.stack([src, dst], 1).reshape(-1)
        y = jnp.stack([dst, src], 1).reshape(-1)
        tt, mm = jnp.repeat(t, 2), jnp.repeat(mask, 2)
        rep_r = jnp.stack([read_src[2], read_dst[2]], 1).reshape(2 * bsz, *read_src[2].shape[1:])
        ids_r = jnp.stack([read_src[0], read_dst[0]], 1).reshape(2 * bsz, -1)
        if self.cache_sizes:
            m1 = self.cache_sizes[0]
            h1_ids, h1_rep = ids_r[:, 1 : 1 + m1], rep_r[:, 1 : 1 + m1]
            if len(self.cache_sizes) > 1:  # y's hop 2 <- x's hop-1 entries (pre-batch)
                h1_t = state["c1_t"][x]
                new["c2_id"], new["c2_t"], new["c2_rep"] = cache_write(
                    state["c2_id"],
                    state["c2_t"],
                    state["c2_rep"],
                    jnp.repeat(y, m1),
                    h1_ids.reshape(-1),
                    h1_t.reshape(-1),
                    h1_rep.reshape(-1, self.ngh_dim),
                    (h1_ids >= 0).reshape(-1) & jnp.repeat(mm, m1),
                    u2,
                    self.replace_prob,
                    self.hash_seed,
                )
            slot = cache_hash(y, m1, self.hash_seed)
            held = jnp.take_along_axis(h1_ids, slot[:, None], 1)[:, 0] == y
            payload = jnp.where(held[:, None], rep_r[jnp.arange(2 * bsz), 1 + slot], 0.0)
            new["c1_id"], new["c1_t"], new["c1_rep"] = cache_write(
                state["c1_id"],
                state["c1_t"],
                state["c1_rep"],
                x,
                y,
                tt,
                payload,
                mm,
                u1,
                self.replace_prob,
                self.hash_seed,
            )
        # Hop 0 and the self representation: the node's last event of the batch.
        n = self.num_nodes
        seg = jnp.where(mm, x, n)
        order = jnp.arange(2 * bsz)
        last = jax.ops.segment_max(jnp.where(mm, order, -1), seg, n + 1)
        win = mm & (last[seg] == order)
        row = jnp.where(win, x, n)
        new["c0_t"] = state["c0_t"].at[row].set(tt, mode="drop")
        new["c0_rep"] = state["c0_rep"].at[row].set(rep_r[:, 0], mode="drop")
        s = state["self"]
        inp = [
            s[y],
            jnp.repeat(batch["feat"], 2, axis=0),
            self.time_enc(tt - state["last_update"][x]),
        ]
        s_new, _ = self.self_gru(s[x], self.self_in(jnp.concatenate(inp, -1)))
        new["self"] = s.at[row].set(s_new, mode="drop")
        new["last_update"] = state["last_update"].at[row].set(tt, mode="drop")
        return new

    def step(self, state, batch):
        """Score the batch's positives and negatives with pre-batch state, then update it."""
        t, s = batch["t"], state["self"]
        r_src = self.read(state, batch["src"], t)
        r_dst = self.read(state, batch["dst"], t)
        r_neg = self.read(state, batch["neg"], t)
        s_src = s[batch["src"]]
        pos = self.score(state, r_src, r_dst, s_src, s[batch["dst"]])
        neg = self.score(state, r_src, r_neg, s_src, s[batch["neg"]])
        return self.update(state, batch, r_src, r_dst), (pos, neg)

    def __call__(self, state, batch):
        return self.step(state, batch)


__all__ = ["NAT", "cache_hash", "cache_write", "write_draws"]
