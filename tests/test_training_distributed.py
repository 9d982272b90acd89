import torch
import torch.multiprocessing as mp

from bayesprior.checkpoints import read_model_file
from bayesprior.plugins import register_plugin, unregister_plugin
from bayesprior.training.trainer import TrainConfig, train

from training_fixtures import TinyArchitecturePlugin, make_cases

# one deterministic run (batch Dice, summed CE) and one Bayesian run (per-case Dice, mean CE); the Bayesian
# run uses a tiny posterior variance so the sampling noise (different in each process) vanishes, while the
# data/KL balance (which Adam's invariance to the gradient scale would not reveal) is still checked
SETTINGS = [{"ce_reduction": "sum", "dice_batch": True},
            {"method": "gaussian", "log_variance_init": -30.0, "prior_options": {"scale": 0.05},
             "ce_reduction": "mean", "dice_batch": False}]


def _config(**kw):
    return TrainConfig(architecture="tiny3d", max_epochs=2, batch_size=4, progress=False, seed=5, **kw)


def _worker(rank, world, store, root):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    register_plugin(TinyArchitecturePlugin(), "tiny-ddp")
    try:
        for i, kw in enumerate(SETTINGS):
            train(_config(**kw), make_cases(8), run_dir=f"{root}/ddp{i}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    register_plugin(TinyArchitecturePlugin(), "tiny-single")
    try:
        for i, kw in enumerate(SETTINGS):
            single = train(_config(**kw), make_cases(8), run_dir=tmp_path / f"single{i}")
            a = read_model_file(tmp_path / f"ddp{i}" / "model.pt")["state_dict"]
            b = read_model_file(single)["state_dict"]
            assert a.keys() == b.keys()
            for key in a:
                assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), (kw, key)
    finally:
        unregister_plugin("tiny-single")
