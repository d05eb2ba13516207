"""What the structure tests share: float64, one torch thread for tiny models, seeded inputs."""

import pytest
import torch

from shapelens._checks import single_thread

D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread(True):
        yield


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)
