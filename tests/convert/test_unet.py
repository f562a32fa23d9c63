"""diffusers `UNet2DModel` in ADM layout (scale-shift AdaGN, residual resampling, attention at the
second level, classes) -> netlab's U-Net: equal outputs to float32 round-off; DDPM's layout
(additive time embedding, convolutional resampling) is refused in one line naming the key."""

import jax
import numpy as np
import pytest

from netlab.convert import unet as convert
from netlab.errors import UserError

pytestmark = pytest.mark.peers

ADM = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    downsample_type="resnet",
    upsample_type="resnet",
    resnet_time_scale_shift="scale_shift",
    attention_head_dim=None,
    num_class_embeds=5,
)


def test_adm_unet2dmodel_matches(peers):
    torch, diffusers, _ = peers
    torch.manual_seed(0)
    peer = diffusers.UNet2DModel(**ADM).eval()
    c = convert.convert(peer.state_dict(), image_size=8)
    assert c.config["attention_resolutions"] == (4,) and c.config["channel_mult"] == (1, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    t, labels = np.array([999, 10]), np.array([1, 4])
    with torch.no_grad():
        want = peer(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels)).sample
    want = want.numpy().transpose(0, 2, 3, 1)
    got = jax.jit(c.module().apply)(
        {"params": c.params}, x.transpose(0, 2, 3, 1), t.astype(np.float32), labels
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_ddpm_layout_is_refused(peers):
    torch, diffusers, _ = peers
    ddpm = diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).state_dict()
    with pytest.raises(UserError) as e:
        convert.convert(ddpm, image_size=8)
    msg = str(e.value)
    assert "time_emb_proj.weight" in msg and "scale_shift" in msg and "\n" not in msg
    sd = diffusers.UNet2DModel(**{**ADM, "down_block_types": ("DownBlock2D", "AttnDownBlock2D")})
    with pytest.raises(UserError, match="down_blocks.0.downsamplers.0.conv.weight' is a conv"):
        convert.convert(sd.state_dict(), image_size=8)
