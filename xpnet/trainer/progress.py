"""What a training run shows while it runs: a progress bar per epoch (stderr) and a summary line per epoch."""

from __future__ import annotations

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """A tqdm bar per epoch when ``bar`` is true (epoch, steps, loss, examples per second); lines when ``lines``.

    Lines go through ``tqdm.write`` (stdout), so that they do not tear a bar
    being drawn.
    """

    def __init__(self, bar, lines):
        self.bar, self.lines = bool(bar), bool(lines)
        self._bar = None

    def start_epoch(self, total, desc, done=0):
        """A new bar of ``total`` steps, ``done`` of them already made (a resumed epoch)."""
        if not self.bar:
            return
        self._bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
        if done:
            self._bar.update(done)

    def step(self, loss=None, examples_per_second=None):
        """One step more; with ``loss`` (a newly read one), show it and the speed."""
        if self._bar is None:
            return
        if loss is not None:
            self._bar.set_postfix({"loss": f"{loss:.4f}", "ex/s": f"{examples_per_second:,.0f}"})
        self._bar.update(1)

    def end_epoch(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def abort(self):
        """The run stops on an error or Ctrl-C: the bar under way stays, and ends its line."""
        if self._bar is not None:
            self._bar.leave = True
            self._bar.close()
            self._bar = None

    def say(self, text):
        """A line of its own, where lines are shown."""
        if self.lines:
            tqdm.write(text)
