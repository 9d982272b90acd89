"""Make a MONAI network Bayesian with one Gaussian prior per resolution group, and train it briefly.

    pip install monai        # (or: pip install -e '.[test]')
    python examples/wrap_monai_unet.py

`group_by_resolution` finds the layer groups of a network it has never seen from one dry forward pass
(encoder and decoder apart, by the resolution of each convolution's input); `bayesianize` then gives each
group its own prior. Swap "gaussian" for a fitted Deep Weight Prior to transfer knowledge. Runs in seconds
on a CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from bayesprior import bayesianize, by_group
from bayesprior.grouping import group_by_resolution


def main() -> None:
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
               num_res_units=1)
    x = torch.randn(2, 1, 16, 16, 16)
    target = (x[:, 0] > 0.5).long()  # a toy "lesion" mask

    # 3x3x3 convolutions only: the kernels a Deep Weight Prior would model
    groups = group_by_resolution(net, x[:1], kernel_size=3)
    for name, layers in groups.items():
        print(f"{name:12s} {', '.join(layers)}")

    bm = bayesianize(net, {by_group(g): ("gaussian", {"scale": 0.1}) for g in groups}, groups=groups)
    print(bm.summary())

    optimiser = torch.optim.Adam(bm.parameters(), lr=1e-2)
    for step in range(5):
        optimiser.zero_grad()
        nll = F.cross_entropy(bm(x), target)  # mean per case (one volume is one case)
        elbo = bm.elbo_loss(nll, n_train=len(x))
        elbo.loss.backward()
        optimiser.step()
        print(f"step {step}: loss {elbo.loss.item():.1f}  data {elbo.data.item():.3f}  KL {elbo.kl.item():.1f}")

    prediction = bm.predict(x, samples=4, transform=lambda y: y.softmax(1), uncertainty="entropy")
    print(f"predictive mean {tuple(prediction.mean.shape)}, mean entropy {prediction.uncertainty.mean():.3f}")


if __name__ == "__main__":
    main()
