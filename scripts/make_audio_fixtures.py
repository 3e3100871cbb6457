#!/usr/bin/env python3
"""Regenerate the audio fixtures in tests/fixtures/audio/ used by tests/audio_decode.rs.

Run from the repository root with the fixtures virtualenv:
    /work/venv/bin/python scripts/make_audio_fixtures.py

Tools (versions the committed files were made with):
    python 3.11, numpy 1.26.4, soundfile 0.12.1 (bundled libsndfile 1.2.0, which encodes FLAC,
    MP3 via LAME and OGG Vorbis/Opus), torch 2.5.1, torchaudio 2.5.1 (ffmpeg backend, ffmpeg 5.1).
    No sox/ffmpeg command-line tool is needed.

Every good file holds a known signal: channel 0 a 440 Hz sine at amplitude 0.5, channel 1 (when
present) a 1000 Hz sine at amplitude 0.25, both starting at phase 0. `manifest.json` describes each
file; `<file>.ref.f32` (raw little-endian float32) holds the mono mix (channel mean, computed in
float64) of the file as decoded by torchaudio.load -- the reference implementation's loader -- and
`resampled_*.ref.f32` holds torchaudio.transforms.Resample's output for the resampling parity test.

Re-running reproduces the audio data and every .ref.f32 bit for bit; only metadata bytes change
(the timestamp in libsndfile's PEAK chunk of float WAVs, the random Ogg stream serial numbers),
and the Opus file's payload, which only has to be rejected. On another CPU the two
resampled_*.ref.f32 can differ in the last bit (float32 convolution). It stops if torchaudio has
no FFmpeg backend (see main). Also run by scripts/make_fixtures.py audio.
"""

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
FREQS = [440.0, 1000.0]
AMPS = [0.5, 0.25]


def signal(sr: int, seconds: float, channels: int) -> np.ndarray:
    """[frames, channels] float64 test signal."""
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    return np.stack([AMPS[c] * np.sin(2 * np.pi * FREQS[c] * t) for c in range(channels)], axis=1)


def ref_mono(path: Path) -> np.ndarray:
    """Mono mix of the file as torchaudio (the reference loader) decodes it."""
    wav, _ = torchaudio.load(str(path), backend="ffmpeg")  # [channels, frames] float32, normalised
    return wav.double().mean(dim=0).float().numpy()


def main() -> None:
    # Without FFmpeg's shared libraries torchaudio falls back to libsndfile, which decodes MP3 and
    # Vorbis differently (the Vorbis file comes out 128 frames shorter), so stop instead.
    if "ffmpeg" not in torchaudio.list_audio_backends():
        raise SystemExit("torchaudio has no FFmpeg backend: install FFmpeg's shared libraries "
                         "(4, 5 or 6; the fixtures were made with 5.1, Debian 12's libavformat59 etc.)")
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        f.unlink()

    # name, format, subtype, sample rate, channels, seconds, lossless
    good = [
        ("pcm16_16k_mono.wav", "WAV", "PCM_16", 16000, 1, 0.5, True),
        ("pcm16_44k_stereo.wav", "WAV", "PCM_16", 44100, 2, 0.25, True),
        ("pcm8_16k_mono.wav", "WAV", "PCM_U8", 16000, 1, 0.5, True),
        ("pcm24_48k_stereo.wav", "WAV", "PCM_24", 48000, 2, 0.25, True),
        ("pcm32_48k_mono.wav", "WAV", "PCM_32", 48000, 1, 0.25, True),
        ("float32_44k_mono.wav", "WAV", "FLOAT", 44100, 1, 0.25, True),
        ("float64_16k_stereo.wav", "WAV", "DOUBLE", 16000, 2, 0.25, True),
        ("flac_44k_stereo.flac", "FLAC", "PCM_16", 44100, 2, 0.25, True),
        ("mp3_44k_stereo.mp3", "MP3", "MPEG_LAYER_III", 44100, 2, 0.25, False),
        ("mp3_16k_mono.mp3", "MP3", "MPEG_LAYER_III", 16000, 1, 0.5, False),
        ("vorbis_48k_stereo.ogg", "OGG", "VORBIS", 48000, 2, 0.25, False),
    ]
    manifest = {"freqs_hz": FREQS, "amps": AMPS, "files": []}
    for name, fmt, subtype, sr, ch, secs, lossless in good:
        x = signal(sr, secs, ch)
        path = OUT / name
        sf.write(str(path), x, sr, format=fmt, subtype=subtype)
        ref = ref_mono(path)
        ref.astype("<f4").tofile(str(path) + ".ref.f32")
        info = sf.info(str(path))
        manifest["files"].append(
            {
                "name": name,
                "sample_rate": sr,
                "channels": ch,
                "frames": int(x.shape[0]),
                "lossless": lossless,
                "ref_frames": int(ref.shape[0]),
                "soundfile_frames": int(info.frames),
            }
        )

    # Resampling parity: torchaudio's Resample (the reference's resampler) on two mono mixes.
    for src, sr in [("pcm16_44k_stereo.wav", 44100), ("pcm16_16k_mono.wav", 16000)]:
        mono = torch.from_numpy(np.fromfile(str(OUT / src) + ".ref.f32", dtype="<f4"))
        out = torchaudio.transforms.Resample(sr, 32000)(mono.unsqueeze(0))[0]
        out.numpy().astype("<f4").tofile(str(OUT / f"resampled_{src}_32k.ref.f32"))

    # Unsupported codec: Opus in OGG (symphonia 0.5 has no Opus decoder).
    sf.write(str(OUT / "opus_48k_mono.ogg"), signal(48000, 0.25, 1), 48000, format="OGG", subtype="OPUS")

    # Bad inputs.
    (OUT / "empty.wav").write_bytes(b"")
    rng = np.random.default_rng(1234)
    (OUT / "random_bytes.wav").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    whole = (OUT / "pcm16_16k_mono.wav").read_bytes()
    # Header intact (declares 8000 frames), data cut to about 60 %.
    (OUT / "truncated_data.wav").write_bytes(whole[: int(len(whole) * 0.6)])
    # Cut inside the fmt chunk.
    (OUT / "truncated_header.wav").write_bytes(whole[:30])
    flac = (OUT / "flac_44k_stereo.flac").read_bytes()
    (OUT / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    # A valid WAV header with zero frames.
    sf.write(str(OUT / "zero_frames.wav"), np.zeros((0, 1)), 16000, subtype="PCM_16")
    # Float WAV holding a NaN at frame 100 and, separately, an Inf.
    x = signal(16000, 0.1, 1).astype(np.float32)
    x[100, 0] = np.nan
    sf.write(str(OUT / "nan_float32.wav"), x, 16000, subtype="FLOAT")
    x[100, 0] = np.inf
    sf.write(str(OUT / "inf_float32.wav"), x, 16000, subtype="FLOAT")

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
