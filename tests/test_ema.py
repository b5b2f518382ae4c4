import pytest
import torch
import torch.nn as nn

from diffkit import EMA


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_ema_copies_until_start_then_averages_exactly():
    model = make()
    ema = EMA(model, decay=0.9, start_step=2)
    for _ in range(2):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        ema.update(model)
    torch.testing.assert_close(ema.model[0].weight, model[0].weight)  # still copying
    before = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema.update(model)
    torch.testing.assert_close(ema.model[0].weight, 0.9 * before + 0.1 * model[0].weight)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)  # buffers are copied


def test_ema_update_every_skips_steps():
    model = make()
    ema = EMA(model, decay=0.5, start_step=0, update_every=2)
    start = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model)
    assert torch.equal(ema.model[0].weight, start)
    ema.update(model)
    torch.testing.assert_close(ema.model[0].weight, start + 1.0)
    assert ema.state_dict()["num_updates"] == 2


def test_ema_model_has_no_gradients_and_seed_name_works():
    model = make()
    ema = EMA(model, decay=0.0, start_step=0)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        model[0].bias.fill_(7.0)
    ema.update_model_average(ema.model, model)
    assert torch.equal(ema.model[0].bias, model[0].bias)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.5)


def test_ema_warmup_decay_is_min_of_decay_and_1_plus_n_over_10_plus_n():
    model = make()
    ema = EMA(model, decay=0.3, start_step=1, warmup=True)
    seen = []
    for _ in range(5):
        ema.update(model)
        seen.append(ema.current_decay())
    # update 1 copies; updates 2, 3, … are averaging updates n = 1, 2, …: 2/11, 3/12, then the cap 0.3 < 4/13
    assert seen == [0.0, 2 / 11, 3 / 12, 0.3, 0.3]
    assert EMA(model, decay=0.5, start_step=0).current_decay() == 0.0


def test_ema_warmup_averages_with_the_warmed_up_decay():
    model = make()
    ema = EMA(model, decay=0.999, start_step=0, warmup=True)
    start = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(11.0)
    ema.update(model)  # n = 1: decay 2/11, so the average moves 9/11 of the way
    torch.testing.assert_close(ema.model[0].weight, start + 9.0)
    assert ema.state_dict()["warmup"] is True


def test_state_dict_round_trips_the_weights_and_counters_through_torch_save(tmp_path):
    model = make()
    ema = EMA(model, decay=0.7, start_step=1, update_every=1, warmup=True)
    for _ in range(4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    other = EMA(make(), decay=0.1, start_step=0)  # other settings, other weights
    other.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert other.counters() == ema.counters()
    for a, b in zip(ema.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    other.update(model)  # the next update is the same: the warm-up decay follows the restored count
    assert torch.equal(ema.model[0].weight, other.model[0].weight)
    # counters() alone moves the count and settings, and leaves the weights
    fresh = EMA(make(), decay=0.5, start_step=0)
    before = fresh.model[0].weight.clone()
    fresh.load_state_dict(ema.counters())
    assert fresh.num_updates == 5 and fresh.decay == 0.7 and torch.equal(fresh.model[0].weight, before)
    with pytest.raises(ValueError, match="EMA decay must lie in \\[0, 1\\], got 2"):
        fresh.load_state_dict({**ema.counters(), "decay": 2})
    with pytest.raises(ValueError, match="EMA state has no 'num_updates'"):
        fresh.load_state_dict({"decay": 0.5})
    assert fresh.decay == 0.7  # a refused state changes nothing


def test_weights_of_another_model_are_refused_in_one_line_and_change_nothing():
    ema = EMA(make(), decay=0.5, start_step=0)
    before = [t.clone() for t in ema.model.state_dict().values()]
    other = EMA(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)), decay=0.9).state_dict()
    with pytest.raises(ValueError, match=r"^EMA state: its weights do not fit this model: of another shape "
                                         r"\['0.weight'\]$"):
        ema.load_state_dict(other)
    with pytest.raises(ValueError, match=r"^EMA state: its weights do not fit this model: missing \['1.bias', "):
        ema.load_state_dict(EMA(nn.Sequential(nn.Linear(3, 2)), decay=0.9).state_dict())
    assert ema.decay == 0.5 and all(torch.equal(a, b) for a, b in zip(before, ema.model.state_dict().values()))
