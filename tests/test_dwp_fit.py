import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bayesprior.cli import cli
from bayesprior.errors import CheckpointError
from bayesprior.kernels import KernelBank
from bayesprior_dwp import fit_kernel_vae, load_prior_file, save_prior_file


def _structured_bank(n=3000, seed=0):
    """Kernels = a1 * centre blob + a2 * x-gradient + small noise, at the element scale of real kernels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(3) - 1] * 3, indexing="ij"))
    blob = np.exp(-(grid ** 2).sum(0)).astype(np.float32)
    gradient = grid[0].astype(np.float32)
    blob, gradient = blob / np.linalg.norm(blob), gradient / np.linalg.norm(gradient)
    a1 = rng.normal(0.05, 0.02, (n, 1, 1, 1))
    a2 = rng.normal(0.0, 0.04, (n, 1, 1, 1))
    kernels = (a1 * blob + a2 * gradient + 0.002 * rng.standard_normal((n, 3, 3, 3))).astype(np.float32)
    return KernelBank({"g": kernels}, {"kernel_size": [3, 3, 3],
                                       "groups": {"g": {"layers": ["conv"], "kept": n, "dropped": 0}}})


def _stats(kernels):
    flat = kernels.reshape(len(kernels), -1)
    return flat.mean(), flat.std(), np.linalg.norm(flat, axis=1).mean()


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    bank = _structured_bank(n=2000)
    vae, history = fit_kernel_vae(bank, "g", max_epochs=40, batch_size=200, lr=3e-3, progress=False)
    return bank, vae, history


def test_fitting_raises_the_heldout_elbo(fitted):
    _, _, history = fitted
    assert len(history) == 41 and all(np.isfinite(history))
    assert max(history) > history[0] + 30  # nats per kernel: from an untrained VAE to a fitted one


def test_the_decoder_reaches_the_small_scale_of_real_kernels(fitted):
    # the reference's tanh bound kept sigma_w >= 0.61; here the noise level 0.002 must be reachable
    _, vae, _ = fitted
    with torch.no_grad():
        _, log_variance = vae.decode(torch.zeros(1, vae.latent_dim))
    assert float((0.5 * log_variance).exp().max()) < 0.02


def test_vae_samples_match_the_bank_statistics(fitted):
    # tolerance: mean within 0.15 element std, std and mean norm within 15 %
    bank, vae, _ = fitted
    mean, std, norm = _stats(bank.kernels["g"])
    s_mean, s_std, s_norm = _stats(vae.sample(4000, generator=torch.Generator().manual_seed(1)).numpy())
    assert abs(s_mean - mean) < 0.15 * std
    assert abs(s_std / std - 1) < 0.15
    assert abs(s_norm / norm - 1) < 0.15


def test_prior_file_round_trip_keeps_the_vae_and_its_metadata(fitted, tmp_path):
    bank, vae, history = fitted
    save_prior_file(tmp_path / "prior.pt", {"g": (vae, history)}, bank)
    loaded = load_prior_file(tmp_path / "prior.pt")
    assert loaded.groups == ["g"] and loaded.kernel_size == (3, 3, 3)
    assert loaded.header["latent_dim"] == 6 and loaded.header["provenance"]["groups"]["g"]["kept"] == 2000
    assert loaded.heldout_elbo("g") == pytest.approx(history)
    assert loaded.header["groups"]["g"]["layers"] == ["conv"]
    again = loaded.vae("g")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), vae.state_dict().values()))


def test_a_truncated_prior_file_is_reported_by_name(tmp_path):
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_prior_file(tmp_path / "cut.pt")


def test_fit_prior_and_show_kernels_commands_write_their_files(tmp_path):
    bank = _structured_bank(n=300)
    bank.kernels["h"] = bank.kernels["g"][:100] * 2
    bank.header["groups"]["h"] = {"layers": ["conv2"], "kept": 100, "dropped": 0}
    bank.save(tmp_path / "bank.npz")
    runner = CliRunner()
    result = runner.invoke(cli, ["fit-prior", str(tmp_path / "bank.npz"), "--out", str(tmp_path / "prior.pt"),
                                 "--max-epochs", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("group"))
    assert header.split() == ["group", "kernels", "epochs", "iid", "Gaussian", "full-cov", "Gaussian", "gain",
                              "VAE", "ELBO", "VAE", "ELBO", "-", "full"]
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.split()[:1] in (["g"], ["h"])}
    assert set(rows) == {"g", "h"} and rows["g"][1] == "300" and rows["h"][2] == "3"
    # three epochs are not enough to beat a fitted Gaussian: the user is told, per group
    behind = [g for g, r in rows.items() if float(r[-1]) <= 0]
    assert behind and all(f"group {g!r}" in result.output and "does not beat" in result.output for g in behind)
    assert load_prior_file(tmp_path / "prior.pt").groups == ["g", "h"]
    result = runner.invoke(cli, ["show-kernels", str(tmp_path / "bank.npz"), str(tmp_path / "prior.pt"),
                                 "--out", str(tmp_path / "kernels.png"), "--count", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kernels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
