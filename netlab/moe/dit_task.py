"""DiT-MoE on the digits: the diffusion package's class-conditional digits task with the DiT
replaced by `netlab.moe.dit_moe.DiTMoE` and the loss extended by α·(expert-level balance loss).
Sampling, evaluation (digits Frechet distance, sample grid) are the diffusion task's; the routing
metrics (load_balance, dropped_fraction, ...) are logged as training metrics."""
from netlab.diffusion.task import DigitsDiffusion
from netlab.moe.dit_moe import DiTMoE
from netlab.moe.task import mean_aux, moe_kwargs


class DiTMoEDigits(DigitsDiffusion):
    def __init__(self, config):
        super().__init__(config)
        m = config.model
        kw = dict(image_size=8, channels=1, num_classes=10, patch=m.patch, width=m.width, depth=m.depth,
                  num_heads=m.num_heads, moe_every=m.moe_every, moe=moe_kwargs(m.moe), dtype=self.dtype)
        self.model = DiTMoE(**kw)                      # evaluation / sampling: eval capacity factor
        self.train_model = DiTMoE(train=True, **kw)

    def apply_model(self, params, inp, noise_cond, labels, rng, train):
        """The diffusion loss gets alpha * (expert-level balance loss); routing metrics are logged."""
        model = self.train_model if train else self.model
        out, state = model.apply({"params": params}, inp, noise_cond, labels,
                                 rngs={"router": rng}, mutable=["moe_aux"])
        metrics = mean_aux([v[0] for _, v in sorted(state["moe_aux"].items())])
        return out, None, metrics, self.config.loss.load_balance * metrics["load_balance"]
