"""Training progress off a terminal: one plain line per epoch, never a carriage-return bar."""
import io

from sidl.training.progress import TrainingProgress


def test_off_a_terminal_each_epoch_is_one_line():
    log = io.StringIO()
    shown = TrainingProgress(60, "s", log)
    assert not shown.tty
    for i in range(1, 4):
        for s in range(10):
            shown.step(i * 15 + s * 0.1)                # within an epoch: nothing written
        shown.epoch(i * 15.0, f"epoch {i} step {i * 40} loss 0.1 val 0.2")
    shown.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert lines[0] == " 25% 15/60 s  epoch 1 step 40 loss 0.1 val 0.2"
    assert lines[2].startswith(" 75% 45/60 s")


def test_an_epoch_budget_counts_steps():
    log = io.StringIO()
    shown = TrainingProgress(200, "steps", log)
    shown.epoch(100, "epoch 1 step 100 loss 0.1 val 0.2")
    assert log.getvalue() == " 50% step 100/200  epoch 1 step 100 loss 0.1 val 0.2\n"
