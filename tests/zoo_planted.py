"""A small conv net with a planted bad layer: one output channel of `c2` (its most active one after
training) scaled x1000 and the matching input channel of `c3` scaled /1000. ReLU is positively homogeneous, so the float function
is unchanged, but the int8 activation after `c2` needs a 1000x wider range and every other
channel of it rounds to a few levels: int8 collapses. Inputs are the demo's real digit images."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PlantNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.c3(x))
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


TRAIN = slice(0, 300)  # of the demo's 400 held-out digits; 300: are the evaluation split
EVAL = slice(300, 400)


def _train(net: PlantNet, epochs: int = 8) -> None:
    """A few seconds of Adam on 300 digits: the other channels must matter for the collapse to show."""
    from edgeconv.demo import heldout

    data = heldout()
    x, y = torch.from_numpy(data.x[TRAIN]), torch.from_numpy(data.y[TRAIN])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()


def planted_net(plant: bool = True, seed: int = 0) -> PlantNet:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = PlantNet()
    _train(net)
    net.bad_channel = -1
    if plant:
        from edgeconv.demo import heldout

        with torch.no_grad():
            act = F.relu(net.c2(F.relu(net.c1(torch.from_numpy(heldout().x[TRAIN])))))
            bad = int(act.mean((0, 2, 3)).argmax())
            net.c2.weight[bad] *= 1000
            net.c2.bias[bad] *= 1000
            net.c3.weight[:, bad] /= 1000
        net.bad_channel = bad
    return net


def planted_spec():
    """ModelSpec factory (`tests.zoo_planted:planted_spec`) with the demo's digits as data."""
    from edgeconv.demo import heldout
    from edgeconv.models import ModelSpec

    return ModelSpec(module=planted_net(), example_inputs=(torch.zeros(1, 3, 32, 32),), name="planted",
                     data=heldout)


def accuracy(net: torch.nn.Module) -> float:
    from edgeconv.demo import heldout

    data = heldout()
    with torch.no_grad():
        out = net(torch.from_numpy(data.x[EVAL]))
    return float((out.argmax(1).numpy() == data.y[EVAL]).mean())
