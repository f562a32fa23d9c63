"""DiT weights from diffusers and from the original DiT layout give netlab's DiT the same function.

A tiny randomly initialised diffusers `DiTTransformer2DModel` (2 blocks, width 32, 8x8x4 latents,
patch 2, learned sigma, 10 classes; diffusers' random init has non-zero adaLN gates, so every
branch counts) with its per-block embedders tied, as in diffusers' converted checkpoints:
- converted, netlab's DiT gives its eps channels to float32 round-off at several timesteps and
  labels (the null class included), and 5 DDIM steps of diffusers' `DDIMScheduler` ("trailing",
  clip off) equal netlab's DDIM on the same grid through `timestep_denoiser` from the same noise;
- renamed to the original DiT's keys (fused qkv, `pos_embed` buffer) with the original's two
  constants put back into the peer (frequency shift 0, LayerNorm `norm3` eps 1e-6), the `original`
  converter matches too, and the sin-cos table check accepts the real buffer.
Bad input: a missing key, a mis-shaped key, untied embedders: one line each; the CLI writes a
checkpoint that `restore_params` (what `checkpoint.init_from` calls) reads back, from a .pt file
and from a diffusers folder (safetensors, config.json), and a bad path exits 2 with one line.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from netlab.convert import __main__ as cli
from netlab.convert import dit as convert
from netlab.diffusion import parameterization, samplers, schedules
from netlab.errors import UserError

pytestmark = pytest.mark.peers

B, C, S, CLASSES, STEPS = 2, 4, 8, 10, 5


def t2n(t):
    return np.asarray(t.detach().numpy())


@pytest.fixture(scope="module")
def peer(peers):
    torch, diffusers, _ = peers
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=C,
        out_channels=2 * C,
        num_layers=2,
        sample_size=S,
        patch_size=2,
        num_embeds_ada_norm=CLASSES,
    ).eval()
    emb = model.transformer_blocks[0].norm1.emb
    for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(emb.state_dict())
    return model


def run_peer(model, x, t, labels):
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels)).sample
    return t2n(out)[:, :C].transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, C, S, S)).astype(np.float32)
    return x, np.array([999, 37], np.int64), np.array([3, CLASSES], np.int64)


def ours(c, x, t, labels):
    model = c.module(image_size=S)
    apply = jax.jit(model.apply)
    return np.asarray(
        apply({"params": c.params}, x.transpose(0, 2, 3, 1), t.astype(np.float32), labels)
    )


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_diffusers_dit_outputs_and_ddim_samples(peer, inputs, peers):
    torch, diffusers, _ = peers
    c = convert.diffusers(peer.state_dict(), num_heads=2, image_size=S)
    assert c.config == dict(
        channels=C,
        patch=2,
        width=32,
        depth=2,
        num_heads=2,
        num_classes=CLASSES,
        freq_shift=1.0,
        mlp_norm_eps=1e-5,
        image_size=S,
    )
    x, t, labels = inputs
    # 5 DDIM steps, trailing spacing, from the same noise.
    sched = diffusers.DDIMScheduler(
        beta_schedule="linear", clip_sample=False, timestep_spacing="trailing"
    )
    sched.set_timesteps(STEPS)
    lat = torch.from_numpy(x)
    lab = torch.from_numpy(labels)
    with torch.no_grad():
        for step in sched.timesteps:
            eps = peer(lat, step.repeat(B), lab).sample[:, :C]
            lat = sched.step(eps, step, lat).prev_sample
    model = c.module(image_size=S)

    def net(z, steps):
        return model.apply({"params": c.params}, z, steps, labels)

    denoise = parameterization.timestep_denoiser(net, schedules.Schedule("linear"), "eps")
    grid = schedules.sampling_grid(schedules.Schedule("linear"), STEPS, "trailing")

    @jax.jit
    def both(z):  # one program: the outputs at (t, labels), and the samples
        return net(z, t.astype(np.float32)), samplers.sample(denoise, z, grid, "ddim", finish=False)

    out, got = both(jnp.asarray(x.transpose(0, 2, 3, 1)))
    close(np.asarray(out), run_peer(peer, x, t, labels))
    close(np.asarray(got), t2n(lat).transpose(0, 2, 3, 1))


def original_state_dict(model):
    """The diffusers model under the original DiT's key names (fused qkv, pos_embed buffer)."""
    import torch

    sd = model.state_dict()
    emb = "transformer_blocks.0.norm1.emb."
    out = {
        "x_embedder.proj.weight": sd["pos_embed.proj.weight"],
        "x_embedder.proj.bias": sd["pos_embed.proj.bias"],
        "pos_embed": model.pos_embed.pos_embed,
        "y_embedder.embedding_table.weight": sd[emb + "class_embedder.embedding_table.weight"],
        "final_layer.adaLN_modulation.1.weight": sd["proj_out_1.weight"],
        "final_layer.adaLN_modulation.1.bias": sd["proj_out_1.bias"],
        "final_layer.linear.weight": sd["proj_out_2.weight"],
        "final_layer.linear.bias": sd["proj_out_2.bias"],
    }
    for j, i in ((0, 1), (2, 2)):
        for leaf in ("weight", "bias"):
            out[f"t_embedder.mlp.{j}.{leaf}"] = sd[f"{emb}timestep_embedder.linear_{i}.{leaf}"]
    for i in range(len(model.transformer_blocks)):
        p, q = f"transformer_blocks.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[q + "attn.qkv." + leaf] = torch.cat([sd[f"{p}attn1.to_{n}.{leaf}"] for n in "qkv"])
            for theirs, mine in (
                ("attn1.to_out.0", "attn.proj"),
                ("ff.net.0.proj", "mlp.fc1"),
                ("ff.net.2", "mlp.fc2"),
                ("norm1.linear", "adaLN_modulation.1"),
            ):
                out[f"{q}{mine}.{leaf}"] = sd[f"{p}{theirs}.{leaf}"]
    return out


def test_original_dit_layout_matches(peer, inputs):
    sd = original_state_dict(peer)
    c = convert.original(sd, num_heads=2)
    assert c.config["image_size"] == S and "freq_shift" not in c.config
    orig = copy.deepcopy(peer)  # the original DiT's constants
    for block in orig.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6
    x, t, labels = inputs
    close(ours(c, x, t, labels), run_peer(orig, x, t, labels))
    assert convert.convert(sd, num_heads=2).config == c.config  # told apart by its keys


def test_bad_state_dicts_are_one_line(peer):
    sd = dict(peer.state_dict())
    cases = []
    missing = {k: v for k, v in sd.items() if k != "proj_out_1.bias"}
    cases.append((missing, "key 'proj_out_1.bias' is missing"))
    bent = {
        **sd,
        "transformer_blocks.1.ff.net.2.weight": sd["transformer_blocks.1.ff.net.2.weight"][:, :64],
    }
    cases.append(
        (bent, "key 'transformer_blocks.1.ff.net.2.weight' has shape (32, 64), expected (32, 128)")
    )
    key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias"
    cases.append(({**sd, key: sd[key] + 1}, f"key {key!r} differs from"))
    cases.append(({**sd, "extra.weight": sd["proj_out_1.bias"]}, "unexpected key 'extra.weight'"))
    for state, text in cases:
        with pytest.raises(UserError) as e:
            convert.diffusers(state, num_heads=2)
        assert text in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="width 32 is none of the DiT presets"):
        convert.diffusers(sd)


def test_cli_writes_what_init_from_reads(peer, tmp_path, capsys, peers):
    torch = peers[0]
    from netlab.checkpoint import manager

    src = tmp_path / "dit.pt"
    torch.save(original_state_dict(peer), src)
    assert cli.main(["dit", str(src), str(tmp_path / "out"), "--opt", "num_heads=2"]) == 0
    printed = capsys.readouterr().out
    assert "netlab model: netlab.diffusion.dit:DiT" in printed and "depth = 2" in printed
    c = convert.original(original_state_dict(peer), num_heads=2)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), c.params)
    params, step = manager.restore_params(str(tmp_path / "out"), abstract)
    assert step == 0
    jax.tree.map(np.testing.assert_array_equal, params, c.params)

    # A diffusers folder (safetensors + config.json: heads, sample size, norm eps from there).
    peer.save_pretrained(tmp_path / "folder")
    assert cli.main(["dit", str(tmp_path / "folder"), str(tmp_path / "o1")]) == 0
    assert "freq_shift = 1.0" in capsys.readouterr().out
    c = convert.diffusers(peer.state_dict(), num_heads=2, image_size=S)
    params, _ = manager.restore_params(str(tmp_path / "o1"), abstract)
    jax.tree.map(np.testing.assert_array_equal, params, c.params)

    assert cli.main(["dit", str(tmp_path / "nothing.pt"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such file" in err
    assert cli.main(["dit", str(src), str(tmp_path / "o3"), "--opt", "heads=2"]) == 2
    assert "NAME one of num_heads" in capsys.readouterr().err
