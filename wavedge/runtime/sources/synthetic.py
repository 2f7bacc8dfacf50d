"""``synthetic:imu[?n=N&seed=S&rate=HZ|max]``: an IMU-like generator for smoke tests - per
channel a slow sinusoid (0.5-3 Hz) plus noise, at the manifest's sample rate. ``n=0``: endless."""

from __future__ import annotations

import numpy as np

from wavedge.runtime.sources import COUNT_RANGE, Pacer, Sample, SourceError, rate_param


class SyntheticSource:
    def __init__(self, url, manifest) -> None:
        url.check_params(("n", "seed", "rate"))
        if url.path not in ("imu", ""):
            raise SourceError(f"{url.text}: unknown generator {url.path!r}; known: imu")
        fed = manifest.signature.fed
        if len(fed) != 1 or fed[0].dtype != "float32":  # had failed on the missing sensor
            raise SourceError(f"{url.text} draws float sensor channels, and this model's "
                              "samples are " + ", ".join(f"{i.name} ({i.dtype})" for i in fed)
                              + ": replay a recording of them instead")
        self.n = url.get("n", 1000, int, COUNT_RANGE)
        self.rate_hz = rate_param(url, manifest)
        # the signal's own clock is the model's rate, whatever the pacing: rate=max gives the
        # same samples, only sooner (it had taken 100 Hz, halving a 50 Hz model's frequencies)
        self.signal_hz = manifest.sample_rate_hz or self.rate_hz or 100.0
        self.mean = np.asarray(manifest.mean, np.float32)
        self.std = np.asarray(manifest.std, np.float32)
        self.rng = np.random.default_rng(url.get("seed", 0, int, (0, 2 ** 63 - 1)))

    def __iter__(self):
        d = len(self.mean)
        freq = self.rng.uniform(0.5, 3.0, d)
        phase = self.rng.uniform(0, 2 * np.pi, d)
        dt = 1.0 / self.signal_hz
        pacer = Pacer(self.rate_hz)
        i = 0
        while self.n == 0 or i < self.n:
            wave = np.sin(2 * np.pi * freq * i * dt + phase)
            noise = 0.2 * self.rng.standard_normal(d)
            pacer.wait()
            yield Sample((self.mean + self.std * (wave + noise)).astype(np.float32))
            i += 1

    def close(self) -> None:
        pass


def open(url, manifest) -> SyntheticSource:  # noqa: A001
    return SyntheticSource(url, manifest)
