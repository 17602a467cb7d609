"""A callback for the time-budget tests: a fake clock that training and validation advance."""

import time

import pytorch_lightning as pl

from solo_lib import schedule


class FakeClock(pl.Callback):
    """Stands in for `solo_lib.schedule`'s clock while a fit runs.

    A training step takes `step_s` seconds, a validation `val_s`, or `map_val_s` when it
    computes mask AP. Process `rank` runs ``1 + rank * rank_skew`` times slower, so that
    several processes see different times, as on real machines.
    """

    def __init__(
        self,
        step_s: float = 1.0,
        val_s: float = 0.0,
        map_val_s: float = 0.0,
        rank_skew: float = 0.0,
    ) -> None:
        self.step_s, self.val_s, self.map_val_s = step_s, val_s, map_val_s
        self.rank_skew = rank_skew
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def _tick(self, trainer: pl.Trainer, seconds: float) -> None:
        self.now += seconds * (1 + trainer.global_rank * self.rank_skew)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        schedule.time = self

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        schedule.time = time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tick(trainer, self.step_s)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._tick(trainer, self.map_val_s if pl_module._map_this_epoch() else self.val_s)
