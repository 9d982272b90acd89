"""Wrap an ordinary PyTorch model with priors, train it variationally for a few steps, predict with uncertainty.

    python examples/wrap_any_model.py

Runs in seconds on a CPU; the data are random, so the point is the API, not the accuracy.
"""
from __future__ import annotations

import torch
from torch import nn

import bayesprior as bp


class SmallSegmenter(nn.Module):
    """A tiny 2D fully convolutional network: any torch model works the same way."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.classifier = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.up(self.features(x))))


def main(steps: int = 20, seed: int = 0) -> bp.Predictive:
    torch.manual_seed(seed)
    images = torch.randn(16, 1, 16, 16)
    labels = (images[:, 0] > 0.5).long() + (images[:, 0] > 1.0).long()  # 3 classes from intensity

    # 3x3 convolutions get a Gaussian prior, the 1x1 classifier a log-uniform one; the rest stays plain
    model = bp.bayesianize(SmallSegmenter(), {
        bp.by_kernel_size(3): ("gaussian", {"scale": 0.5}),
        "classifier": "loguniform",
    }, log_variance_init=-8.0)
    print(model.summary())

    # wrap first, then build the optimiser: it must see the posterior (and any prior) parameters
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = 4
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(images), (batch,))
        logits = model(images[index])  # "lrt" mode: local reparameterisation while training
        nll = nn.functional.cross_entropy(logits, labels[index], reduction="none").sum((1, 2)).mean()
        loss, data_term, kl = model.elbo_loss(nll, n_train=len(images))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss.item():10.1f}  data {data_term.item():10.1f}  kl {kl.item():8.1f}")

    model.eval()
    prediction = model.predict(images[:2], samples=10, transform=lambda y: y.softmax(1), uncertainty="entropy")
    print(f"predictive mean {tuple(prediction.mean.shape)}, entropy map {tuple(prediction.uncertainty.shape)}, "
          f"mean entropy {prediction.uncertainty.mean().item():.3f} nats")

    plain = model.mean_model()  # a deterministic copy at the posterior mean, for export
    print(f"exported {type(plain).__name__} with {sum(p.numel() for p in plain.parameters())} parameters")
    return prediction


if __name__ == "__main__":
    main()
