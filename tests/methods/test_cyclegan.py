"""CycleGAN through the one loop: two G, two D, cycle L1, identity, image pool, ASGIT feedback, exact resume."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from i2i.build import build_trainer
from i2i.cli.train import run_training
from i2i.losses.gan import GANLoss
from i2i.methods.cyclegan import CycleGAN, ImagePool
from i2i.models.attention_discriminators import PHA
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator


def _nets():
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, ngf=4, n_blocks=1, antialias=False, antialias_up=False)
    G_BA = ResnetGenerator(3, 3, ngf=4, n_blocks=1, antialias=False, antialias_up=False)
    return G, G_BA, PatchGAN(3, ndf=4, antialias=False), PatchGAN(3, ndf=4, antialias=False)


def _batch():
    return {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}


def test_losses_match_a_naive_computation():
    G, G_BA, D, D_A = _nets()
    method = CycleGAN(G_BA, D_A, lambda_cycle=10.0, lambda_identity=0.5)
    batch, gan = _batch(), GANLoss("lsgan")
    out = method.forward_G(G, batch)
    terms = method.generator_losses(G, D, batch, out, gan)
    a, b = batch["A"], batch["B"]
    expected = {"G_GAN": ((D(G(a)).logits - 1) ** 2).mean(), "G_GAN_BA": ((D_A(G_BA(b)).logits - 1) ** 2).mean(),
                "cycle_A": 10 * (G_BA(G(a)) - a).abs().mean(), "cycle_B": 10 * (G(G_BA(b)) - b).abs().mean(),
                "idt_B": 5 * (G(b) - b).abs().mean(), "idt_A": 5 * (G_BA(a) - a).abs().mean()}
    assert terms.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.allclose(terms[k], v, atol=1e-6), k
    d_terms = method.discriminator_losses(D, batch, out, gan)  # empty pools: the fakes themselves
    assert torch.allclose(d_terms["D_B_fake"], 0.5 * (D(G(a)).logits ** 2).mean(), atol=1e-6)
    assert torch.allclose(d_terms["D_A_real"], 0.5 * ((D_A(a).logits - 1) ** 2).mean(), atol=1e-6)


def test_second_generator_and_discriminator_go_to_the_loop_optimizers():
    G, G_BA, D, D_A = _nets()
    method = CycleGAN(G_BA, D_A)
    groups = method.param_groups()
    assert {id(p) for p in groups["G"]} == {id(p) for p in G_BA.parameters()}
    assert {id(p) for p in groups["D"]} == {id(p) for p in D_A.parameters()}
    assert groups["F"] == [] and method.update_order == ("G", "D")
    assert any(k.startswith("G_BA.") for k in method.state_dict()) and any(k.startswith("D_A.") for k in method.state_dict())


def _naive_pool(size, stream, seed):
    random.seed(seed)
    stored, out = [], []
    for img in stream:
        if len(stored) < size:
            stored.append(img)
            out.append(img)
        elif random.uniform(0, 1) > 0.5:
            j = random.randint(0, size - 1)
            out.append(stored[j])
            stored[j] = img
        else:
            out.append(img)
    return out


def test_image_pool_matches_the_published_rule_and_round_trips():
    stream = [torch.full((1, 1, 2, 2), float(i)) for i in range(12)]
    pool = ImagePool(4)
    random.seed(3)
    got = [pool.query(x) for x in stream[:6]] + [pool.query(torch.cat(stream[6:8]))] + \
          [pool.query(x) for x in stream[8:]]
    got = torch.cat(got)
    assert torch.equal(got, torch.cat(_naive_pool(4, stream, 3)))
    clone = ImagePool(4)
    clone.load_state_dict(pool.state_dict())
    assert torch.equal(torch.cat(clone.images), torch.cat(pool.images))
    assert torch.equal(ImagePool(0).query(stream[0]), stream[0])


def test_feedback_maps_come_from_the_right_discriminators():
    from i2i.methods.feedback import Feedback

    G, G_BA, _, _ = _nets()
    D, D_A = PHA(3, ndf=4, antialias=False), PHA(3, ndf=4, antialias=False)
    method = CycleGAN(G_BA, D_A)
    method.feedback = Feedback(transfer_widths=(4, 4), cache_resolution=4)
    method.feedback.attach(method.feedback_sources(D))
    params = torch.tensor([[0, 0, 32, 32, 0], [0, 0, 32, 32, 0]])
    batch = {**_batch(), "A_path": ["a0", "a1"], "B_path": ["b0", "b1"], "A_params": params, "B_params": params}
    out = method.forward_G(G, batch)
    method.generator_losses(G, D, batch, out, GANLoss("lsgan"))
    cache = method.feedback.cache
    read = lambda key: cache.store[cache.slots[key]][None]
    assert torch.allclose(read("a0"), D(out["fake_B"]).attention[:1], atol=1e-5)   # previous: D_B's map of fake_B
    assert torch.allclose(read("b1"), D_A(out["fake_A"]).attention[1:], atol=1e-5)  # and D_A's map of fake_A
    assert method.feedback._sources == {"A": D_A, "B": D}  # same_step: the source-domain discriminators


def test_cyclegan_experiment_settings(compose):
    cfg = compose("experiment=cyclegan_feedback_horse2zebra")
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay) == (100, 100)
    assert (cfg.method.lambda_cycle, cfg.method.pool_size, cfg.feedback.injection) == (10.0, 50, "rhp")
    assert cfg.discriminator._target_.endswith("PHA") and not cfg.generator.antialias
    assert cfg.generator.init_type == cfg.discriminator.init_type == "normal"
    for name in ("apple2orange", "summer2winter"):
        assert compose(f"experiment=cyclegan_feedback_{name}").data.name.startswith(name)


def _state_tensors(trainer) -> dict:
    state = trainer.state_dict()
    flat = {}
    for net in ("G", "D", "method", "opt_G", "opt_D"):
        stack = [(net, state[net])]
        while stack:
            prefix, node = stack.pop()
            if torch.is_tensor(node):
                flat[prefix] = node
            elif isinstance(node, dict):
                stack += [(f"{prefix}.{k}", v) for k, v in node.items()]
            elif isinstance(node, list):
                flat[prefix] = repr(node) if not any(torch.is_tensor(v) for v in node) else None
                stack += [(f"{prefix}.{i}", v) for i, v in enumerate(node) if torch.is_tensor(v)]
    return flat


def test_cyclegan_with_feedback_trains_and_resumes_exactly(compose):
    common = ["experiment=cyclegan_feedback_horse2zebra", "debug=smoke", "train.deterministic=true",
              "train.ckpt_every=0", "feedback.transfer_widths=[4,4]", "feedback.cache_resolution=8",
              "method.pool_size=2", "method.lambda_identity=0.5"]
    straight = run_training(compose(*common, "name=straight", "train.max_steps=4"))
    run_training(compose(*common, "name=split", "train.max_steps=2"))
    resumed = run_training(compose(*common, "name=split", "resume=auto", "train.max_steps=4"))
    a, b = _state_tensors(straight), _state_tensors(resumed)
    assert a.keys() == b.keys() and any("cache._extra_state.maps" in k for k in a)
    assert any("pool_A._extra_state" in k for k in a)
    for k in a:
        assert (torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]), k
    assert (resumed.run_dir / "samples" / "step_00000002.png").is_file()


def test_cyclegan_plain_builds_without_feedback(compose):
    cfg = compose("experiment=cyclegan_horse2zebra", "debug=smoke")
    trainer = build_trainer(cfg, cfg.run_dir)
    assert trainer.method.feedback is None and type(trainer.D) is PatchGAN
    assert trainer.G.model[1].in_channels == 3


def test_a_module_in_no_optimizer_group_is_refused_not_trained_by_the_wrong_one():
    """A method that owns a second network but forgets to list it: param_groups() names it instead of putting it
    into the projection-head optimizer (which would step it silently with the wrong learning rate)."""
    from i2i.methods.base import Method

    class Forgetful(Method):
        def __init__(self) -> None:
            super().__init__()
            self.G_BA = nn.Conv2d(3, 3, 1)

    with pytest.raises(ValueError, match=r"optimizer_modules\(\): G_BA.weight, G_BA.bias in no optimizer group"):
        Forgetful().param_groups()

    class Twice(Forgetful):
        def optimizer_modules(self):
            groups = super().optimizer_modules()
            groups["G"].append(self.G_BA)
            groups["D"].append(self.G_BA)
            return groups

    with pytest.raises(ValueError, match="listed under both 'G' and 'D'"):
        Twice().param_groups()
