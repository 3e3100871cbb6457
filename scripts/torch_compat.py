#!/usr/bin/env python3
"""Lets the PyTorch reference scripts run where python3 has torch, transformers, numpy and scipy
but not msclap, torchlibrosa, librosa or soundfile: the GPU machine (no network to install them).

Does nothing unless ADIFF_TORCH_COMPAT names a folder holding copies of the `msclap` and
`torchlibrosa` packages (`scripts/gpu-bench.sh --prepare` copies them there from the fixtures
venv; both are pure Python). Then `install()`, called by the bench scripts before they import
scripts/fixtures_*.py:
  - loads msclap's model modules (htsat.py, mapper.py and what they import) from that copy
    without running msclap's package __init__ (CLAPWrapper: torchaudio, huggingface_hub, yaml),
    and torchlibrosa from that copy;
  - registers stand-ins for `librosa` and `soundfile` in sys.modules, real ones installed or not,
    with only what torchlibrosa's STFT / log-mel front end and fixtures_audio's WAV I/O call:
    librosa.filters.get_window (scipy.signal.get_window, as librosa calls it),
    librosa.util.pad_center, librosa.filters.mel (librosa's Slaney mel, same float32 steps) and
    soundfile.read / soundfile.write of 16-bit PCM WAV (stdlib `wave`).
gpu-bench.sh sets the variable on every device, so its CPU dry run takes the path the GPU takes.
`python3 scripts/torch_compat.py --check` compares the stand-ins with the real librosa and
soundfile where those are installed.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
import wave
from pathlib import Path

import numpy as np

ENV = "ADIFF_TORCH_COMPAT"


# --------------------------------------------------------------------------------------------
# librosa stand-in (librosa 0.10's formulas for what torchlibrosa needs)
# --------------------------------------------------------------------------------------------


class ParameterError(Exception):
    pass


def get_window(window, nx: int, fftbins: bool = True) -> np.ndarray:
    import scipy.signal

    if callable(window):
        return window(nx)
    return scipy.signal.get_window(window, nx, fftbins=fftbins)


def pad_center(data: np.ndarray, *, size: int, axis: int = -1, **kwargs) -> np.ndarray:
    kwargs.setdefault("mode", "constant")
    n = data.shape[axis]
    lpad = int((size - n) // 2)
    if lpad < 0:
        raise ParameterError(f"Target size ({size:d}) must be at least input size ({n:d})")
    lengths = [(0, 0)] * data.ndim
    lengths[axis] = (lpad, int(size - n - lpad))
    return np.pad(data, lengths, **kwargs)


def normalize(s: np.ndarray, norm=np.inf, axis: int = 0, **_) -> np.ndarray:
    if norm is None:
        return s
    mag = np.abs(s).astype(float)
    if norm == np.inf:
        length = np.max(mag, axis=axis, keepdims=True)
    else:
        length = np.sum(mag**norm, axis=axis, keepdims=True) ** (1.0 / norm)
    return s / np.where(length > 0, length, 1.0)


def _hz_to_mel(f):
    """Slaney's mel scale (librosa, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asanyarray(f)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    if f.ndim:
        log_t = f >= min_log_hz
        mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    elif f >= min_log_hz:
        mels = min_log_mel + np.log(f / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels):
    mels = np.asanyarray(mels)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel(*, sr: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax=None, htk: bool = False,
        norm="slaney", dtype=np.float32) -> np.ndarray:
    """librosa.filters.mel for its defaults (Slaney scale and area normalisation) -> [n_mels, 1 + n_fft // 2]."""
    if htk or norm != "slaney":
        raise NotImplementedError("torch_compat's librosa stand-in has only the Slaney mel filters")
    if fmax is None:
        fmax = float(sr) / 2
    weights = np.zeros((n_mels, int(1 + n_fft // 2)), dtype=dtype)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


# --------------------------------------------------------------------------------------------
# soundfile stand-in: 16-bit PCM WAV only
# --------------------------------------------------------------------------------------------


def sf_read(file, dtype: str = "float64", **_):
    with wave.open(str(file), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{file}: torch_compat reads 16-bit PCM WAV only")
        ch, sr, n = w.getnchannels(), w.getframerate(), w.getnframes()
        q = np.frombuffer(w.readframes(n), dtype="<i2").astype(np.int16)
    q = q.reshape(-1, ch) if ch > 1 else q
    if dtype == "int16":
        return q, sr
    return (q.astype(dtype) / 32768.0).astype(dtype), sr


def sf_write(file, data, samplerate: int, subtype: str = "PCM_16", **_) -> None:
    if subtype != "PCM_16":
        raise ValueError("torch_compat writes 16-bit PCM WAV only")
    data = np.asarray(data)
    if data.dtype != np.int16:
        data = np.clip(np.round(data * 32767), -32768, 32767).astype(np.int16)
    ch = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(file), "wb") as w:
        w.setnchannels(ch)
        w.setsampwidth(2)
        w.setframerate(int(samplerate))
        w.writeframes(data.astype("<i2").tobytes())


# --------------------------------------------------------------------------------------------


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package="__path__" in attrs)
    m.__dict__.update(attrs)
    return m


def install() -> bool:
    """Applies the stand-ins when ADIFF_TORCH_COMPAT is set; returns whether it did."""
    root = os.environ.get(ENV)
    if not root:
        return False
    root_p = Path(root).resolve()
    for pkg in ("msclap/models", "torchlibrosa"):
        if not (root_p / pkg).is_dir():
            raise SystemExit(f"{ENV}={root}: no {pkg}/ there (run scripts/gpu-bench.sh --prepare where the fixtures venv is)")
    # transformers probes which optional packages exist when it is imported: let it see the real
    # ones (find_spec on a stand-in would answer yes, and its audio utilities would then import
    # packages that are missing).
    import transformers  # noqa: F401

    exceptions = _module("librosa.util.exceptions", ParameterError=ParameterError)
    util = _module("librosa.util", pad_center=pad_center, normalize=normalize, exceptions=exceptions)
    filters = _module("librosa.filters", get_window=get_window, mel=mel)
    librosa = _module("librosa", filters=filters, util=util, __version__="torch_compat")
    sys.modules.update({"librosa": librosa, "librosa.util": util, "librosa.filters": filters,
                        "librosa.util.exceptions": exceptions})
    sys.modules["soundfile"] = _module("soundfile", read=sf_read, write=sf_write, __version__="torch_compat")
    # Bare packages: their submodules import from the copy, their __init__ files never run.
    for name, sub in (("msclap", "msclap"), ("msclap.models", "msclap/models")):
        sys.modules[name] = _module(name, __path__=[str(root_p / sub)])
    sys.modules["msclap"].models = sys.modules["msclap.models"]
    for k in [k for k in sys.modules if k == "torchlibrosa" or k.startswith("torchlibrosa.")]:
        del sys.modules[k]
    sys.path.insert(0, str(root_p))
    return True


def _check() -> int:
    """Stand-ins against the real packages (run with the fixtures venv)."""
    import tempfile

    import librosa as real_librosa
    import soundfile as real_sf

    worst = 0.0
    for sr, n_fft, n_mels, fmin, fmax in ((32000, 1024, 64, 50.0, 14000.0), (16000, 512, 40, 0.0, None)):
        a = real_librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        b = mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        worst = max(worst, float(np.abs(a - b).max()))
    w1 = real_librosa.util.pad_center(real_librosa.filters.get_window("hann", 1000, fftbins=True), size=1024)
    w2 = pad_center(get_window("hann", 1000, fftbins=True), size=1024)
    worst = max(worst, float(np.abs(w1 - w2).max()))
    x = (np.random.default_rng(0).standard_normal(32000) * 8000).astype(np.int16)
    with tempfile.TemporaryDirectory() as d:
        real_sf.write(f"{d}/a.wav", x, 32000, subtype="PCM_16")
        sf_write(f"{d}/b.wav", x, 32000)
        q1, r1 = sf_read(f"{d}/a.wav", dtype="int16")
        q2, r2 = real_sf.read(f"{d}/b.wav", dtype="int16")
    same_wav = r1 == r2 == 32000 and np.array_equal(q1, x) and np.array_equal(q2, x)
    print(f"mel / window max |stand-in - librosa| {worst:.3e}; WAV round trip both ways: {same_wav}")
    return 0 if worst <= 1e-7 and same_wav else 1


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare the stand-ins with the real librosa and soundfile")
    if ap.parse_args().check:
        sys.exit(_check())
    ap.print_help()
