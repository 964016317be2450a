"""Data-parallel training (engine/distributed.py) on the CPU with Gloo and two processes.

Specification: after every step the weights of both ranks are bitwise equal, and equal (to float tolerance) to one
process training on the concatenated batch; the averaged gradients are the single-process gradients while the
per-rank gradients before averaging are not (so the comparison can fail); each rank has its own RNG stream and gets
it back on resume; a torchrun launch of the real CLI trains, rank 0 alone writes, and the run resumes with another
process count (same epoch, position converted by samples consumed).

CUT's losses are means of per-image terms (instance norm, internal negatives), so the gradient of the global batch
mean is the average of the per-rank gradients. Patch locations are random and differ between ranks and the
single-process run; with ``num_patches`` >= H·W at every layer every location is used and PatchNCE (a mean over
patches, negatives = all other patches of the image) does not depend on their order, so the comparison is exact
up to rounding (the comparison trains in float64).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from i2i.engine.distributed import GradientSync, convert_step

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
#: 16 px crops: layer 0 of G (reflection-padded) has 22·22 = 484 locations, so 512 patches take every location
EQUIV = ["experiment=cut_horse2zebra", "debug=smoke", "data.load_size=18", "data.crop_size=16",
         "method.num_patches=512", "discriminator.n_layers=2", "train.n_epochs=1", "train.n_epochs_decay=1",
         "train.max_steps=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _named(trainer, what: str) -> dict[str, torch.Tensor]:
    """Parameters (``what='param'``) or their gradients of G, D and the method, by qualified name."""
    out = {}
    for net, module in (("G", trainer.G), ("D", trainer.D), ("method", trainer.method)):
        for name, p in module.named_parameters():
            t = p.detach() if what == "param" else p.grad
            if t is not None:
                out[f"{net}.{name}"] = t.detach().clone()
    return out


def _train_steps(trainer, steps: int, record_pre_sync: bool = False) -> list[dict]:
    """The loop's steps (one epoch), recording weights and gradients after each."""
    for module in (trainer.G, trainer.D, trainer.method):
        module.double()  # in place: the optimizers keep their parameters
    trainer._set_epoch(trainer.epoch)
    records, pre = [], {}
    if record_pre_sync:
        sync = trainer.comm.sync_grads

        def spy(optimizers):
            for p in (p for o in optimizers for g in o.param_groups for p in g["params"] if p.grad is not None):
                pre[id(p)] = p.grad.detach().clone()
            sync(optimizers)

        trainer.comm.sync_grads = spy
    ids = {f"{net}.{n}": id(p) for net, m in (("G", trainer.G), ("D", trainer.D), ("method", trainer.method))
           for n, p in m.named_parameters()}
    for batch in trainer.build_loader(trainer.dataset, trainer.epoch, 0):
        batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
        trainer.train_step(batch)
        trainer.step += 1
        rec = {"param": _named(trainer, "param"), "grad": _named(trainer, "grad"), "A_index": batch["A_index"]}
        if record_pre_sync:
            rec["pre"] = {k: pre[i] for k, i in ids.items() if i in pre}
        records.append(rec)
        if len(records) == steps:
            break
    return records


def _worker(rank: int, cfg_dict: dict, out_dir: str, port: int) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # rounding far below the tolerances of the comparison
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), I2I_DIST_TIMEOUT_MIN="3")
    from omegaconf import OmegaConf

    from i2i.build import build_trainer
    from i2i.engine import distributed
    from i2i.engine.state import capture_rng

    cfg = OmegaConf.create(cfg_dict)
    trainer = build_trainer(cfg, Path(out_dir) / "run")
    result = {"rng0": torch.get_rng_state()}
    result["steps"] = _train_steps(trainer, 2, record_pre_sync=True)
    # gradient averaging itself: rank-dependent grads, one missing, buckets forced small
    ps = [torch.zeros(n, dtype=torch.float32, requires_grad=True) for n in (3, 5, 2)]
    ps[0].grad = torch.full((3,), rank + 1.0, dtype=torch.float32)
    ps[1].grad = torch.arange(5.0, dtype=torch.float32) * (rank + 1)
    if rank == 0:
        ps[2].grad = torch.ones(2, dtype=torch.float32)
    GradientSync(WORLD, bucket_bytes=16)(ps)
    result["sync"] = [p.grad.clone() for p in ps]
    # every rank's RNG stream is saved and given back on resume
    path = trainer.save("last.pt")
    trainer.comm.barrier()  # rank 0 has written it
    result["rng_saved"] = capture_rng()["torch"]
    torch.rand(100)
    trainer.resume(path)
    result["rng_resumed"] = torch.get_rng_state()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    distributed.cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, datasets_dir):
    """Run :func:`_worker` on two Gloo processes; returns (results per rank, the config dict, out dir)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    out = tmp_path_factory.mktemp("ddp")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.datasets_dir={datasets_dir}", f"paths.checkpoints_dir={out}",
                                          *EQUIV])
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    mp.spawn(_worker, args=(cfg_dict, str(out), _free_port()), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], cfg_dict, out


@pytest.mark.slow  # two gloo processes
def test_ranks_stay_identical_and_equal_one_process_on_the_concatenated_batch(two_ranks, tmp_path):
    from omegaconf import OmegaConf

    from i2i.build import build_trainer

    ranks, cfg_dict, _ = two_ranks
    cfg = OmegaConf.create(cfg_dict)
    cfg.train.batch_size = WORLD  # one process, the global batch
    torch.set_default_dtype(torch.float64)
    try:
        single = _train_steps(build_trainer(cfg, tmp_path / "single"), 2)
    finally:
        torch.set_default_dtype(torch.float32)
    for step, ref in enumerate(single):
        r0, r1 = ranks[0]["steps"][step], ranks[1]["steps"][step]
        assert torch.cat([r0["A_index"], r1["A_index"]]).tolist() == ref["A_index"].tolist()
        assert r0["param"].keys() == ref["param"].keys() and r0["grad"].keys() == ref["grad"].keys()
        far = 0
        for k, g in ref["grad"].items():
            assert torch.equal(r0["param"][k], r1["param"][k]), f"step {step + 1}: ranks differ at {k}"
            assert torch.equal(r0["grad"][k], r1["grad"][k]), k
            scale = g.abs().max().item()
            torch.testing.assert_close(r0["grad"][k], g, rtol=0, atol=1e-4 * scale + 1e-12, msg=k)
            # the average of the two per-rank gradients is the global one; one rank's own gradient is not
            torch.testing.assert_close((r0["pre"][k] + r1["pre"][k]) / 2, g, rtol=0, atol=1e-4 * scale + 1e-12)
            far += not torch.allclose(r0["pre"][k], g, rtol=0, atol=1e-2 * scale)
            # Adam moves a weight by about lr = 2e-4 per step whatever the gradient's size: 1e-6 is 1/200 of it
            torch.testing.assert_close(r0["param"][k], ref["param"][k], rtol=0, atol=1e-6, msg=k)
        assert far > len(ref["grad"]) // 2  # the comparison can fail


@pytest.mark.slow  # two gloo processes (the module's fixture)
def test_gradient_sync_averages_in_small_buckets_with_a_missing_gradient(two_ranks):
    ranks, _, _ = two_ranks
    want = [torch.full((3,), 1.5), torch.arange(5.0) * 1.5, torch.full((2,), 0.5)]
    for r in ranks:
        for got, w in zip(r["sync"], want):
            torch.testing.assert_close(got, w)


@pytest.mark.slow  # two gloo processes (the module's fixture)
def test_each_rank_has_its_own_rng_stream_and_resume_restores_it(two_ranks):
    ranks, _, out = two_ranks
    assert not torch.equal(ranks[0]["rng0"], ranks[1]["rng0"])
    for r in ranks:
        assert torch.equal(r["rng_resumed"], r["rng_saved"])
    state = torch.load(out / "run" / "ckpt" / "last.pt", weights_only=True)
    assert len(state["rng_ranks"]) == WORLD and state["global_batch"] == WORLD
    assert torch.equal(state["rng"]["torch"], state["rng_ranks"][0]["torch"])


@pytest.mark.parametrize("n,old,new", [(4, 2, 1), (10, 1, 3), (10, 3, 2), (12, 4, 4), (7, 2, 3)])
def test_convert_step_keeps_the_epoch_and_the_samples_consumed(n, old, new):
    old_spe, new_spe = n // old, n // new
    for step in range(3 * old_spe):
        got = convert_step(step, old, new, n)
        assert got // new_spe == step // old_spe  # same epoch
        consumed, pos = (step % old_spe) * old, got % new_spe
        assert pos * new <= consumed  # nothing of the epoch skipped
        assert consumed < (pos + 1) * new or pos == new_spe - 1  # at most one global batch seen again


@pytest.mark.slow  # a subprocess or a long run
def test_torchrun_cli_trains_rank0_writes_and_resumes_with_one_process(compose, datasets_dir, tmp_path):
    from i2i.cli.train import run_training

    ckpts = tmp_path / "checkpoints"
    env = dict(os.environ, OMP_NUM_THREADS="1", I2I_DIST_TIMEOUT_MIN="3")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "i2i", "train", "experiment=cut_horse2zebra", "debug=smoke", f"paths.datasets_dir={datasets_dir}",
           f"paths.checkpoints_dir={ckpts}", "name=ddp", "train.n_epochs=2", "train.n_epochs_decay=0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = ckpts / "ddp"
    assert proc.stderr.count("i2i: run finished at step 2") == 1  # rank 0 alone reports
    assert [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()] == [1, 2]
    state = torch.load(run / "ckpt" / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["global_batch"] == 2 and len(state["rng_ranks"]) == 2
    # 4 images, global batch 2: step 2 = start of epoch 2; one process (batch 1): 4 steps per epoch -> step 4
    resumed = run_training(compose("experiment=cut_horse2zebra", "debug=smoke", "name=ddp", "resume=auto",
                                   "train.n_epochs=2", "train.n_epochs_decay=0", "train.max_steps=5"))
    assert resumed.steps_per_epoch == 4 and resumed.step == 5 and resumed.epoch == 2
