"""knowpack.devices: the device guard fails where a GPU would, and allows what PyTorch allows across devices;
a process's device under a launcher."""

from __future__ import annotations

import pytest
import torch

from knowpack.devices import DeviceMismatch, device_guard, process_device

pytestmark = pytest.mark.no_device_guard  # these tests open the guard themselves


def model_tensor() -> torch.Tensor:
    return torch.nn.Linear(3, 3).weight.detach()  # made by a library (torch.nn): the model's side


def test_a_host_tensor_meeting_the_models_fails():
    w = model_tensor()
    with device_guard(owners=("knowpack", __name__)), pytest.raises(DeviceMismatch, match="without device="):
        _ = w + torch.ones(3, 3)


def test_a_copy_sent_to_the_host_by_name_is_host():
    w = model_tensor()
    with device_guard(owners=("knowpack", __name__)), pytest.raises(DeviceMismatch):
        _ = w + (w * 2).to("cpu")


def test_what_is_computed_from_host_tensors_stays_host():
    w = model_tensor()
    with device_guard(owners=("knowpack", __name__)), pytest.raises(DeviceMismatch):
        lengths = torch.tensor([1, 2, 3])
        _ = w >= lengths[:, None].float()  # indexing and casting keep the mark


def test_what_pytorch_allows_across_devices_is_allowed():
    w = model_tensor()
    with device_guard(owners=("knowpack", __name__)):
        assert (w * torch.tensor(2.0)).shape == (3, 3)  # a 0-d host tensor is a scalar
        assert w[torch.tensor([0, 2])].shape == (2, 3)  # host indices
        w[torch.tensor([1])] = torch.zeros(1, 3)  # host index and value
        w.clone().copy_(torch.ones(3, 3))  # copying from the host
        moved = torch.arange(3).to(w.device)  # placed explicitly
        assert (w[0] + moved).shape == (3,)
        assert (w + torch.zeros(3, 3, device=w.device)).shape == (3, 3)  # made with device=


def test_host_only_work_is_fine():
    with device_guard(owners=("knowpack", __name__)):
        ids = torch.full((2, 4), 0, dtype=torch.long)
        ids[0, 2:] = torch.tensor([5, 6])
        assert ids.sum().item() == 11


def test_tensors_made_by_libraries_are_theirs():
    w = model_tensor()
    with device_guard(owners=("knowpack", __name__)):
        made = torch.nn.functional.one_hot(torch.arange(3, device=w.device), 3).float()
        assert (w @ made).shape == (3, 3)


def test_plain_cuda_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device("cuda") == "cuda:3"
    assert process_device("cuda:1") == "cuda:1"  # explicit: kept
    assert process_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_device("cuda") == "cuda"
