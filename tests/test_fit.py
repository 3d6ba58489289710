"""`nbmodelpack.fit` and `nbmodelpack.track` in a terminal: history, metrics to the card, Ctrl-C."""

from __future__ import annotations

import signal

import pytest
import torch
from models import MLP

import nbmodelpack
from nbmodelpack.errors import UsageError
from nbmodelpack.notebook.dashboard import History, history_html, plot_png


def _data(n: int = 256, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = x.flatten(1)[:, :10].argmax(1)  # learnable: which of the first 10 pixels is largest
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)


def test_fit_returns_history_and_its_metrics_go_on_the_next_card(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = MLP(hidden=32)
    history = nbmodelpack.fit(model, _data(), val_loader=_data(128, seed=1), epochs=3, optimizer=torch.optim.Adam(model.parameters(), lr=0.01))
    assert isinstance(history, History) and len(history) == 3
    assert history.keys == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["loss"][2] < history["loss"][0]  # it learns
    assert history.kept == 2 and not history.interrupted and not model.training
    out = capsys.readouterr().out
    assert out.count("fit MLP: epoch ") == 3 and "3 epochs in" in out

    info = nbmodelpack.pack(model, "fitted")
    kept = history.metrics
    assert info.metrics == {
        "train": {"loss": kept["loss"], "accuracy": kept["accuracy"], "epochs": 3},
        "validation": {"loss": kept["val_loss"], "accuracy": kept["val_accuracy"]},
    }
    assert info.metrics["validation"]["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-4)


def test_fit_accepts_custom_loss_and_metric_functions() -> None:
    def top2(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float((outputs.topk(2, dim=1).indices == targets[:, None]).any(1).float().mean())

    history = nbmodelpack.fit(MLP(hidden=8), _data(128), epochs=1, loss=torch.nn.CrossEntropyLoss(), metrics=("accuracy", top2))
    assert history.keys == ["loss", "accuracy", "top2"] and 0 <= history["top2"][0] <= 1
    assert history.monitor == "loss"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs=0: train at least one epoch"),
        ({"epochs": 1, "metrics": ("f1",)}, "unknown metric 'f1'"),
        ({"epochs": 1, "val_loader": 7}, "val_loader is a int"),
    ],
)
def test_fit_bad_arguments_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        nbmodelpack.fit(MLP(hidden=8), _data(64), **kwargs)
    assert "\n" not in str(err.value)


def test_fit_rejects_batches_that_are_not_pairs() -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 1, 28, 28)), batch_size=4)
    with pytest.raises(UsageError, match=r"fit needs batches of \(inputs, targets\)"):
        nbmodelpack.fit(MLP(hidden=8), loader, epochs=1)
    with pytest.raises(UsageError, match="fit needs a torch.nn.Module, got str"):
        nbmodelpack.fit("model", loader, epochs=1)  # type: ignore[arg-type]


class _SigintAt:
    """Sends a real SIGINT (a kernel interrupt) at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, loader: torch.utils.data.DataLoader, model: torch.nn.Module, epoch: int, batch: int) -> None:
        self.loader, self.model, self.epoch_at, self.batch_at = loader, model, epoch, batch
        self.epoch = 0
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        self.snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        for i, batch in enumerate(self.loader):
            if (self.epoch, i) == (self.epoch_at, self.batch_at):
                signal.raise_signal(signal.SIGINT)
            yield batch


def test_ctrl_c_restores_the_best_finished_epoch_by_val_loss(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = MLP(hidden=32)
    train = _SigintAt(_data(), model, epoch=4, batch=1)
    history = nbmodelpack.fit(model, train, val_loader=_data(128, seed=1), epochs=6, optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
    assert history.interrupted and len(history) == 3
    best = min(range(3), key=lambda i: history["val_loss"][i])
    assert history.kept == best
    # the weights at the end of epoch best+1 are what epoch best+2 started from
    for key, value in model.state_dict().items():
        assert torch.equal(value, train.snapshots[best + 1][key]), key
    assert model._nbmodelpack_metrics["train"]["epochs"] == best + 1
    assert model._nbmodelpack_metrics["validation"]["loss"] == pytest.approx(history["val_loss"][best], abs=1e-5)
    out = capsys.readouterr().out
    assert f"interrupted in epoch 4: kept the weights of epoch {best + 1} (val_loss " in out
    assert "Traceback" not in out


def test_ctrl_c_in_the_first_epoch_keeps_the_starting_weights() -> None:
    model = MLP(hidden=8)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    history = nbmodelpack.fit(model, _SigintAt(_data(), model, epoch=1, batch=2), epochs=2)
    assert history.interrupted and history.kept is None and history.metrics == {}
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert model._nbmodelpack_metrics == {}
    assert "no epoch finished" in history.note


def test_track_gives_the_dashboard_to_a_hand_written_loop(capsys: pytest.CaptureFixture[str]) -> None:
    with nbmodelpack.track(total=3, x="epoch") as t:
        for epoch in range(3):
            t.log(loss=torch.tensor(1.0 / (epoch + 1)), acc=50 + 10 * epoch)
    assert t.history["acc"] == [50.0, 60.0, 70.0] and t.history["epoch"] == [1, 2, 3]
    assert t.history.metrics == {"loss": pytest.approx(1 / 3, abs=1e-6), "acc": 70.0}
    out = capsys.readouterr().out
    assert "epoch 3  loss 0.3333  acc 70" in out and "3 epochs in" in out


def test_track_stops_cleanly_on_ctrl_c_and_refuses_non_numbers() -> None:
    ran_after = False
    with nbmodelpack.track() as t:
        t.log(loss=1.0)
        signal.raise_signal(signal.SIGINT)
        t.log(loss=0.5)
    ran_after = True
    assert ran_after and t.history.interrupted and len(t.history) == 1
    with pytest.raises(UsageError, match="needs a number, got str"), nbmodelpack.track() as t2:
        t2.log(loss="low")


def test_history_text_html_and_curves() -> None:
    rows = [{"epoch": i, "loss": 1 / i, "val_loss": 1.2 / i, "accuracy": 50.0 + i} for i in range(1, 4)]
    h = History(rows=rows, x="epoch", kept=2, seconds=3.0)
    text = str(h)
    assert text.splitlines()[0] == "3 epochs in 3 s; kept epoch 3: loss 0.3333, val_loss 0.4, accuracy 53"
    assert "3 *" in text
    assert ">val_loss</th>" in history_html(h)
    assert plot_png(h)[:8] == b"\x89PNG\r\n\x1a\n"
    escaped = history_html(History(rows=[{"step": 1, "<x>": 1.0}]))
    assert "&lt;x&gt;" in escaped and "<x>" not in escaped
