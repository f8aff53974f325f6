"""Test audio as numpy arrays: sine tones, 16-bit WAV files, and their level (dBFS) and pitch (Hz)."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

# (frames, channels), full scale = ±1.0
Samples = npt.NDArray[np.float64]

_INT_FORMATS = {2: "<i2", 4: "<i4"}  # sample width in bytes -> little-endian numpy dtype


def tone(freq: float, seconds: float, rate: int = 48000, dbfs: float = -20.0, channels: int = 2) -> Samples:
    """A sine whose `level_dbfs` is `dbfs`, the same on every channel."""
    t = np.arange(round(seconds * rate)) / rate
    mono = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, np.newaxis], channels, axis=1)


def write_wav(path: Path, samples: Samples, rate: int = 48000) -> None:
    """16-bit PCM: what every ALSA test chain and aplay accept without a conversion of their own."""
    ints = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(ints.tobytes())


def read_wav(path: Path) -> tuple[Samples, int]:
    """The samples of a 16- or 32-bit integer PCM WAV as floats in ±1.0, and its rate."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        data = w.readframes(w.getnframes())
    if width not in _INT_FORMATS:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    ints = np.frombuffer(data, dtype=_INT_FORMATS[width]).reshape(-1, channels)
    return ints.astype(np.float64) / 2 ** (8 * width - 1), rate


def level_dbfs(samples: Samples) -> float:
    """RMS level over all channels, in dB where a full-scale sine is 0 dBFS (AES17); silence is -inf."""
    rms = float(np.sqrt(np.mean(np.square(samples))))
    return 20 * math.log10(rms * math.sqrt(2)) if rms > 0 else -math.inf


def peak_hz(samples: Samples, rate: int) -> float:
    """The strongest frequency of the channels' sum (Hann window; resolution rate / frames)."""
    mono = samples.sum(axis=1) if samples.ndim == 2 else samples
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum)) * rate / len(mono)
