"""Optimizers (`SGD`, `Adam`, `AdamW`, `RMSprop`) and learning-rate schedules (`lr_scheduler`),
with `torch.optim`'s names, arguments, update rules and state layouts."""

from minigrad.optim import lr_scheduler
from minigrad.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
