"""Plain training: one classification loss (CE or any calibration loss) on augmented images."""

from __future__ import annotations

from .base import ClassifierMethod


class Plain(ClassifierMethod):
    name = "plain"
