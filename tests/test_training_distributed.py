import pytest
import torch
import torch.multiprocessing as mp

from bayesprior.checkpoints import read_model_file
from bayesprior.plugins import register_plugin, unregister_plugin
from bayesprior.training.trainer import TrainConfig, train
from training_fixtures import _TinyPlugin, make_cases


def _config(**kw):
    return TrainConfig(architecture="tiny3d", max_epochs=2, batch_size=4, progress=False, seed=5,
                       **{"dice_batch": True, **kw})


def _worker(rank, world, store, run_dir, kw):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    register_plugin(_TinyPlugin(), "tiny-ddp")
    try:
        train(_config(**kw), make_cases(8), run_dir=run_dir)
        dist.barrier()
    finally:
        dist.destroy_process_group()


# the Bayesian case uses a tiny posterior variance so the sampling noise (different per process) vanishes,
# while the data/KL balance (which Adam's scale invariance would not hide) is still checked
@pytest.mark.parametrize("kw", [{"ce_reduction": "sum"},
                                {"method": "gaussian", "log_variance_init": -30.0, "prior_options": {"scale": 0.05},
                                 "ce_reduction": "mean", "dice_batch": False}])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, kw):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp"), kw), nprocs=2, join=True)
    register_plugin(_TinyPlugin(), "tiny-single")
    try:
        single = train(_config(**kw), make_cases(8), run_dir=tmp_path / "single")
    finally:
        unregister_plugin("tiny-single")
    a = read_model_file(tmp_path / "ddp" / "model.pt")["state_dict"]
    b = read_model_file(single)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
