"""The hand-over of optimizer state between the reference engine and the fast path, shared by the fast-path tests."""

import torch


def train_handing_over(model, optimizer, trainer, data) -> None:
    """Steps 0-2 on the reference engine (``model``, ``optimizer``), 3-5 on the fast path (``trainer``, which shares
    the model's tensors) after loading the engine's optimizer state, then the rest on the engine again with the
    fast path's state: the weights must end as an uninterrupted run's."""
    for step, (X, y) in enumerate(data):
        if step == 3:
            trainer.load_optimizer_state(optimizer.state)
        if step == 6:
            optimizer.state = trainer.optimizer_state()
        if 3 <= step < 6:
            trainer.step(X, y)
        else:
            with torch.inference_mode():
                optimizer.step(model.loss_and_gradients(X, y).gradients())
