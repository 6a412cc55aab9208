"""Checks shared by the model blocks' tests."""
import torch


def assert_reset_is_deterministic(module: torch.nn.Module, seed: int) -> dict:
    """``reset_parameters()`` under the same seed gives the same state twice; returns that state."""
    torch.manual_seed(seed)
    module.reset_parameters()
    first = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(seed)
    module.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in module.state_dict().items())
    return first
