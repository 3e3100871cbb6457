#!/usr/bin/env python3
"""PyTorch reference fixtures for adiff's log-mel front end and HTSAT encoder.

Run from anywhere:  /work/venv/bin/python scripts/fixtures_audio.py
Writes (deterministically, fixed seeds) into tests/fixtures/htsat/:
  htsat_tiny.ckpt                     torch.save of a plain dict, keys
                                      "module.audio_encoder.base.htsat.<name>" (official naming)
  clip_a.wav, clip_b.wav              16-bit PCM mono, 32 kHz (10.0 s and 3.3 s)
  htsat_tiny_expected.safetensors     float32 intermediates and outputs of the reference

The reference model is msclap's HTSAT (`msclap/models/htsat.py`, same code lineage as ADIFF's
`model/htsat.py`), built with the `htsat`/`audio` sections of configs/tiny.json. See
scripts/FIXTURES.md for how it compares with the project's reference notes (NOTES.md). It reads
nothing outside the repository: the key check uses tests/fixtures/htsat/source/adiff_checkpoint_keys.txt.

The helpers (config loading, model building, weight randomisation, checkpoint writing, WAV I/O and
the instrumented forward pass) are shared with scripts/bench_htsat.py.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn

warnings.filterwarnings("ignore", message=".*torch.meshgrid.*")

# msclap is installed with --no-deps; its package __init__ needs torchaudio (see FIXTURES.md).
from msclap.models.htsat import HTSAT_Swin_Transformer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "htsat"
# The official full-size checkpoint's names, shapes and dtypes (a copy of the project's reference
# list; see scripts/FIXTURES.md). Also read by scripts/fixtures_adiff.py and scripts/bench_explain.py.
DEFAULT_KEYS_FILE = OUT_DIR / "source" / "adiff_checkpoint_keys.txt"

# Official checkpoint naming: DDP prefix + ADIFF module path of the HTSAT core.
KEY_PREFIX = "module.audio_encoder.base.htsat."
KEYS_FILE_PREFIX = "audio_encoder.base.htsat."

SEED_MODEL = 20250114  # model construction + weight randomisation
SEED_AUDIO = 31337  # fixture clips

# Random-weight statistics requested for the fixtures (non-trivial so every parameter matters).
LN_WEIGHT_STD = 0.2  # LayerNorm weight ~ 1 + 0.2 N(0,1)
LN_BIAS_STD = 0.1  # LayerNorm bias ~ 0.1 N(0,1)
BN_MEAN_MU, BN_MEAN_STD = -40.0, 5.0  # bn0 running_mean ~ N(-40, 5) (log-mel dB scale)
BN_VAR_LO, BN_VAR_HI = 50.0, 150.0  # bn0 running_var ~ U(50, 150)
REL_POS_STD = 0.5  # relative position bias tables ~ N(0, 0.5)
TSCAM_TARGET_STD = 1.3  # std over classes of the clip logits (mean over time of tscam logits)
TSCAM_BIAS_STD = 0.3
PROB_LO, PROB_HI = 0.05, 0.95

# Fixture content.
CLIP_A_SECONDS = 10.0
CLIP_B_SECONDS = 3.3
CLIP_A_PEAK = 0.5
CLIP_B_PEAK = 0.45
HEAD_SAMPLES = 1000
POWER_FRAME = 100
INT16_SCALE = 32768.0  # reference reads int16 / 32768
INT16_MAX = 32767


# --------------------------------------------------------------------------------------------
# Config and model
# --------------------------------------------------------------------------------------------


def load_config(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def reference_config(audio: dict) -> SimpleNamespace:
    """The module-style `config` object HTSAT_Swin_Transformer reads (ADIFF's model/config.py)."""
    return SimpleNamespace(
        sample_rate=audio["sample_rate"],
        window_size=audio["n_fft"],
        hop_size=audio["hop_length"],
        mel_bins=audio["n_mels"],
        fmin=audio["fmin"],
        fmax=audio["fmax"],
        enable_tscam=True,
        loss_type="clip_bce",
        htsat_attn_heatmap=False,
        enable_repeat_mode=False,
    )


def build_htsat(cfg: dict) -> HTSAT_Swin_Transformer:
    """Builds the reference HTSAT in eval mode and checks the constants msclap hard-codes."""
    a, h = cfg["audio"], cfg["htsat"]
    model = HTSAT_Swin_Transformer(
        spec_size=h["spec_size"],
        patch_size=h["patch_size"],
        patch_stride=(h["patch_stride"], h["patch_stride"]),
        in_chans=1,
        num_classes=h["num_classes"],
        embed_dim=h["embed_dim"],
        depths=list(h["depths"]),
        num_heads=list(h["num_heads"]),
        window_size=h["window_size"],
        mlp_ratio=h["mlp_ratio"],
        config=reference_config(a),
    ).eval()
    # msclap hard-codes these; fail loudly if the JSON config ever disagrees.
    assert model.freq_ratio == h["freq_ratio"], (model.freq_ratio, h["freq_ratio"])
    assert model.logmel_extractor.amin == a["log_amin"]
    assert model.logmel_extractor.top_db is None and model.logmel_extractor.ref == 1.0
    assert model.spectrogram_extractor.stft.pad_mode == "reflect"
    assert model.bn0.eps == h["batch_norm_eps"]
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            assert m.eps == h["layer_norm_eps"]
    for layer in model.layers:
        for blk in layer.blocks:
            if blk.attn_mask is not None:
                vals = set(torch.unique(blk.attn_mask).tolist())
                assert vals == {0.0, h["shift_mask_value"]}, vals
    return model


@torch.no_grad()
def randomize_weights(model: HTSAT_Swin_Transformer, gen: torch.Generator) -> None:
    """Non-trivial random weights. STFT/mel matrices keep their exact (deterministic) values."""

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen) * std + mean

    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.copy_(normal(m.weight.shape, LN_WEIGHT_STD, 1.0))
            m.bias.copy_(normal(m.bias.shape, LN_BIAS_STD))
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            # PyTorch default init (kaiming-uniform weights, non-zero uniform biases) instead of
            # msclap's trunc_normal(0.02)/zero-bias, so a forgotten bias would be caught.
            # kaiming_uniform(a=sqrt(5)) and the bias rule both reduce to U(-1/sqrt(fan_in), +).
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
            if m.bias is not None:
                m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * bound)
    bn = model.bn0
    bn.weight.copy_(normal(bn.weight.shape, LN_WEIGHT_STD, 1.0))
    bn.bias.copy_(normal(bn.bias.shape, LN_BIAS_STD))
    bn.running_mean.copy_(normal(bn.running_mean.shape, BN_MEAN_STD, BN_MEAN_MU))
    bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) * (BN_VAR_HI - BN_VAR_LO) + BN_VAR_LO)
    for layer in model.layers:
        for blk in layer.blocks:
            t = blk.attn.relative_position_bias_table
            t.copy_(normal(t.shape, REL_POS_STD))


@torch.no_grad()
def calibrate_tscam(model: HTSAT_Swin_Transformer, waves: torch.Tensor, gen: torch.Generator) -> float:
    """Scales tscam_conv so clip probabilities spread over (0.05, 0.95); returns the factor."""
    logits = run_reference(model, waves)["tscam_logits"]  # [B, classes, T]
    clip_logits = logits.mean(-1)  # [B, classes]
    centred = clip_logits - model.tscam_conv.bias[None, :]
    factor = TSCAM_TARGET_STD / float(centred.std())
    model.tscam_conv.weight.mul_(factor)
    model.tscam_conv.bias.copy_(torch.randn(model.tscam_conv.bias.shape, generator=gen) * TSCAM_BIAS_STD)
    return factor


def make_model(cfg: dict, calib_waves: torch.Tensor | None) -> tuple[HTSAT_Swin_Transformer, float]:
    torch.manual_seed(SEED_MODEL)
    model = build_htsat(cfg)
    gen = torch.Generator().manual_seed(SEED_MODEL)
    randomize_weights(model, gen)
    factor = 1.0
    if calib_waves is not None:
        factor = calibrate_tscam(model, calib_waves, gen)
    return model, factor


def official_state_dict(model: nn.Module) -> dict:
    """Plain dict with the official ADIFF key names (`module.audio_encoder.base.htsat.` prefix)."""
    return {KEY_PREFIX + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _gate(t: np.ndarray, on: float, off: float, fade: float = 0.005) -> np.ndarray:
    """0/1 envelope with short raised-cosine edges (tones switching on and off)."""
    up = np.clip((t - on) / fade, 0.0, 1.0)
    down = np.clip((off - t) / fade, 0.0, 1.0)
    env = np.minimum(up, down)
    return 0.5 - 0.5 * np.cos(np.pi * env)


def _log_chirp(t: np.ndarray, f0: float, f1: float, dur: float) -> np.ndarray:
    k = math.log(f1 / f0) / dur
    return np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k)


def _lin_chirp(t: np.ndarray, f0: float, f1: float, dur: float) -> np.ndarray:
    return np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t * t))


def _normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return x * (peak / np.max(np.abs(x)))


def synth_clip_a(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Log chirp 100 Hz -> 12 kHz, five gated tones, low-level white noise; peak 0.5."""
    t = np.arange(int(round(CLIP_A_SECONDS * sr))) / sr
    x = 0.2 * _log_chirp(t, 100.0, 12000.0, CLIP_A_SECONDS)
    for freq, on, off, amp in [
        (440.0, 0.5, 2.5, 0.15),
        (1000.0, 2.0, 4.0, 0.10),
        (2500.0, 3.5, 6.5, 0.12),
        (5000.0, 6.0, 7.0, 0.08),
        (700.0, 7.5, 9.5, 0.15),
    ]:
        x += amp * _gate(t, on, off) * np.sin(2 * np.pi * freq * t)
    x += 0.003 * rng.standard_normal(t.shape)
    return _normalise(x, CLIP_A_PEAK)


def synth_clip_b(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Vibrato harmonic tone, falling linear chirp, AM low-passed noise, clicks; peak 0.45."""
    n = int(round(CLIP_B_SECONDS * sr))
    t = np.arange(n) / sr
    f0 = 220.0 * (1.0 + 0.02 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(0.1 / k * np.sin(k * phase) for k in range(1, 6))
    x = x + 0.12 * _lin_chirp(t, 6000.0, 300.0, CLIP_B_SECONDS)
    noise = rng.standard_normal(n)
    lp = np.empty_like(noise)  # one-pole low-pass
    acc = 0.0
    for i, v in enumerate(noise):
        acc = 0.9 * acc + 0.1 * v
        lp[i] = acc
    x = x + 0.3 * lp * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t)) ** 2
    clicks = np.zeros(n)
    clicks[(np.arange(0.2, CLIP_B_SECONDS, 0.4) * sr).astype(int)] = 0.8
    x = x + np.convolve(clicks, np.exp(-np.arange(64) / 8.0), mode="same")
    x += 0.003 * rng.standard_normal(n)
    return _normalise(x, CLIP_B_PEAK)


def write_wav16(path: Path, x: np.ndarray, sr: int) -> None:
    q = np.clip(np.round(x * INT16_MAX), -INT16_SCALE, INT16_MAX).astype(np.int16)
    sf.write(str(path), q, sr, subtype="PCM_16")


def read_wav16(path: Path, sr: int) -> np.ndarray:
    """The reference input: 16-bit PCM read back as int16 / 32768 (float32)."""
    q, file_sr = sf.read(str(path), dtype="int16")
    if file_sr != sr or q.ndim != 1:
        raise ValueError(f"{path}: expected mono {sr} Hz, got sr={file_sr}, shape={q.shape}")
    return (q.astype(np.float32) / INT16_SCALE).astype(np.float32)


def tile_to(x: np.ndarray, n: int) -> np.ndarray:
    """Reference handling of clips <= 10 s: repeat, then trim."""
    return np.tile(x, int(math.ceil(n / len(x))))[:n]


# --------------------------------------------------------------------------------------------
# Instrumented reference forward
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def run_reference(model: HTSAT_Swin_Transformer, waves: torch.Tensor) -> dict:
    """Runs msclap's own forward() and captures intermediates with forward hooks."""
    cap: dict = {}

    def keep(name_in, name_out, flatten=False):
        # Forward hooks must return None, otherwise they replace the module output.
        def hook(module, inputs, output):
            if name_in is not None:
                cap[name_in] = inputs[0]
            cap[name_out] = torch.flatten(output, 2) if flatten else output

        return hook

    hooks = [
        model.spectrogram_extractor.register_forward_hook(keep(None, "power")),
        model.logmel_extractor.register_forward_hook(keep(None, "logmel")),
        model.patch_embed.register_forward_hook(keep("image", "patch_tokens")),
        model.tscam_conv.register_forward_hook(keep("tscam_in", "tscam_logits", flatten=True)),
    ]

    def keep_stage(idx):
        def hook(module, inputs, output):
            cap[f"stage_out_{idx}"] = output[0]  # BasicLayer returns (tokens, attn)

        return hook

    for idx, layer in enumerate(model.layers):
        hooks.append(layer.register_forward_hook(keep_stage(idx)))
    try:
        out = model(waves)
    finally:
        for hk in hooks:
            hk.remove()
    cap.update(out)
    return cap


# --------------------------------------------------------------------------------------------
# Independent cross-checks
# --------------------------------------------------------------------------------------------


def cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic-convolution weights for taps at offsets -1, 0, 1, 2 (fractional position t)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(1 + t), near(t), near(1 - t), far(2 - t)], axis=-1)


def numpy_image(logmel_bn: np.ndarray, target_t: int, freq_ratio: int, f32_coords: bool) -> np.ndarray:
    """NOTES.md's recipe: bicubic (align_corners) time resize, then fold into a square image.

    PyTorch's CPU kernel computes the source coordinate in float32 (f32 scale times f32 index);
    `f32_coords` reproduces that, otherwise the coordinate is exact (float64).
    """
    b, t_in, mels = logmel_bn.shape
    if f32_coords:
        scale = np.float32((t_in - 1) / (target_t - 1))
        src = (scale * np.arange(target_t, dtype=np.float32)).astype(np.float64)
    else:
        src = np.arange(target_t) * ((t_in - 1) / (target_t - 1))
    i0 = np.floor(src).astype(int)
    w = cubic_weights(src - i0)  # [T, 4]
    idx = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, t_in - 1)  # [T, 4]
    resized = np.einsum("btkm,tk->btm", logmel_bn[:, idx, :], w)  # [B, T, mels]
    chunk = target_t // freq_ratio
    img = resized.reshape(b, freq_ratio, chunk, mels).transpose(0, 1, 3, 2)  # [B, 4, mels, chunk]
    return img.reshape(b, 1, freq_ratio * mels, chunk)


def cross_check(model, cfg, waves, cap) -> dict:
    """Checks the reference against NOTES.md computed another way; returns measured differences."""
    import librosa

    a, h = cfg["audio"], cfg["htsat"]
    report = {}
    # Mel matrix: librosa slaney mel.
    mel = librosa.filters.mel(
        sr=a["sample_rate"],
        n_fft=a["n_fft"],
        n_mels=a["n_mels"],
        fmin=a["fmin"],
        fmax=a["fmax"],
        htk=False,
        norm="slaney",
    ).T
    report["melW_max_abs_diff"] = float(np.abs(model.logmel_extractor.melW.detach().numpy() - mel).max())
    # Power spectrum: FFT STFT (periodic Hann, reflect-centred) vs the conv STFT.
    spec = torch.stft(
        waves.double(),
        n_fft=a["n_fft"],
        hop_length=a["hop_length"],
        window=torch.hann_window(a["n_fft"], periodic=True, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power_fft = (spec.abs() ** 2).transpose(1, 2)  # [B, frames, bins]
    power_conv = cap["power"][:, 0].double()
    report["power_max_rel_diff_vs_fft64"] = float(((power_conv - power_fft).abs().max() / power_fft.abs().max()))
    logmel_fft = 10 * torch.log10(torch.clamp(power_fft @ torch.from_numpy(mel).double(), min=a["log_amin"]))
    report["logmel_max_abs_diff_db_vs_fft64"] = float((cap["logmel"][:, 0].double() - logmel_fft).abs().max())
    # bn0 + resize + fold.
    bn = model.bn0
    lm = cap["logmel"][:, 0].numpy().astype(np.float64)
    lm_bn = (lm - bn.running_mean.detach().numpy()) / np.sqrt(
        bn.running_var.detach().numpy() + bn.eps
    ) * bn.weight.detach().numpy() + bn.bias.detach().numpy()
    for name, f32 in [("f32", True), ("f64", False)]:
        img = numpy_image(lm_bn, h["spec_size"] * h["freq_ratio"], h["freq_ratio"], f32_coords=f32)
        report[f"image_max_abs_diff_vs_numpy_{name}_coords"] = float(np.abs(img - cap["image"].numpy()).max())
    # Head: embedding, clipwise, framewise semantics.
    tin = cap["tscam_in"]
    report["embedding_max_abs_diff_vs_mean"] = float((tin.mean(dim=(2, 3)) - cap["latent_output"]).abs().max())
    logits = cap["tscam_logits"]
    report["clipwise_max_abs_diff_vs_sigmoid_mean"] = float(
        (torch.sigmoid(logits.mean(-1)) - cap["clipwise_output"]).abs().max()
    )
    fw32 = torch.sigmoid(logits).permute(0, 2, 1)
    report["framewise_is_32x_repeat"] = bool(torch.equal(fw32.repeat_interleave(32, dim=1), cap["framewise_output"]))
    # Sensitivity: feed the float64-FFT log-mel (rounded to f32) through the rest of the model
    # (same steps as msclap's forward for a 10 s clip) to see how far an FFT front end moves outputs.
    with torch.no_grad():
        x = logmel_fft.float()[:, None]  # [B, 1, frames, mels]
        x = model.bn0(x.transpose(1, 3)).transpose(1, 3)
        out = model.forward_features(model.reshape_wav2img(x))
    report["fft_frontend_image_max_abs_diff"] = float((model.reshape_wav2img(x) - cap["image"]).abs().max())
    report["fft_frontend_embedding_max_abs_diff"] = float((out["latent_output"] - cap["latent_output"]).abs().max())
    report["fft_frontend_clipwise_max_abs_diff"] = float((out["clipwise_output"] - cap["clipwise_output"]).abs().max())
    return report


@torch.no_grad()
def check_shift_masks(model: HTSAT_Swin_Transformer, cfg: dict, patch_tokens: torch.Tensor) -> dict:
    """Blocks 1 of the stages above window size carry a -100 mask, and that mask changes stage 0."""
    h = cfg["htsat"]
    grid = h["spec_size"] // h["patch_stride"]
    info = {}
    for s, layer in enumerate(model.layers):
        res = grid >> s
        for b, blk in enumerate(layer.blocks):
            shifted = res > h["window_size"] and b % 2 == 1
            assert (blk.attn_mask is not None) == shifted, (s, b)
            assert blk.shift_size == (h["window_size"] // 2 if shifted else 0), (s, b)
            if shifted:
                info[f"layers.{s}.blocks.{b}.attn_mask"] = list(blk.attn_mask.shape)
    # Re-run stage 0 with its mask zeroed: output must move, i.e. the mask path is live.
    blk = model.layers[0].blocks[1]
    ref = model.layers[0](patch_tokens)[0]
    saved = blk.attn_mask.clone()
    blk.attn_mask.zero_()
    unmasked = model.layers[0](patch_tokens)[0]
    blk.attn_mask.copy_(saved)
    info["stage0_change_without_mask_max_abs"] = float((ref - unmasked).abs().max())
    assert info["stage0_change_without_mask_max_abs"] > 1e-2, info
    return info


# --------------------------------------------------------------------------------------------
# Checkpoint key check against the official key list
# --------------------------------------------------------------------------------------------


def official_htsat_keys(path: Path) -> "OrderedDict[str, tuple[list[int], str]]":
    keys: OrderedDict = OrderedDict()
    for line in path.read_text().splitlines():
        if line.startswith(KEYS_FILE_PREFIX):
            name, shape, dtype = line.split("\t")
            keys[name[len(KEYS_FILE_PREFIX) :]] = (json.loads(shape), dtype)
    return keys


def compare_full_size_keys(keys_file: Path) -> list[str]:
    """Full-size (base.json) reference vs the official list: names, shapes and dtypes, exactly."""
    base = load_config(REPO / "configs" / "base.json")
    torch.manual_seed(SEED_MODEL)
    full = build_htsat(base)
    ours = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in full.state_dict().items()}
    official = official_htsat_keys(keys_file)
    problems = []
    for k in sorted(set(official) - set(ours)):
        problems.append(f"missing in reference: {k}")
    for k in sorted(set(ours) - set(official)):
        problems.append(f"extra in reference: {k}")
    for k in sorted(set(ours) & set(official)):
        if ours[k] != (official[k][0], official[k][1]):
            problems.append(f"{k}: reference {ours[k]} vs official {official[k]}")
    return problems


def compare_tiny_keys(model: nn.Module, cfg: dict, keys_file: Path) -> list[str]:
    """Tiny key set vs the official one with the extra depth of the full model's stage 2 removed."""
    official = official_htsat_keys(keys_file)
    depths = cfg["htsat"]["depths"]
    expected = set()
    for k in official:
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m and int(m.group(2)) >= depths[int(m.group(1))]:
            continue
        expected.add(k)
    ours = dict(model.state_dict())
    problems = [f"missing: {k}" for k in sorted(expected - set(ours))]
    problems += [f"extra: {k}" for k in sorted(set(ours) - expected)]
    for k in sorted(expected & set(ours)):
        shape, dtype = official[k]
        if len(shape) != ours[k].dim() or str(ours[k].dtype).replace("torch.", "") != dtype:
            problems.append(f"{k}: rank/dtype {list(ours[k].shape)} {ours[k].dtype} vs {shape} {dtype}")
    return problems


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.json")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--keys-file", type=Path, default=DEFAULT_KEYS_FILE)
    args = ap.parse_args()

    torch.set_num_threads(2)
    cfg = load_config(args.config)
    a = cfg["audio"]
    sr = a["sample_rate"]
    n = int(round(a["duration_s"] * sr))
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. Clips: synthesise, write 16-bit, read back exactly as the reference input.
    rng = np.random.default_rng(SEED_AUDIO)
    write_wav16(args.out / "clip_a.wav", synth_clip_a(sr, rng), sr)
    write_wav16(args.out / "clip_b.wav", synth_clip_b(sr, rng), sr)
    clips = [read_wav16(args.out / name, sr) for name in ("clip_a.wav", "clip_b.wav")]
    waves_np = np.stack([tile_to(c, n) for c in clips])  # [2, 320000]
    waves = torch.from_numpy(waves_np)

    # 2. Model with random weights; tscam scaled on these clips.
    model, tscam_factor = make_model(cfg, waves)
    print(f"tscam_conv weight scaled by {tscam_factor:.4f}")

    # 3. Reference forward + checks.
    cap = run_reference(model, waves)
    mask_info = check_shift_masks(model, cfg, cap["patch_tokens"])
    xcheck = cross_check(model, cfg, waves, cap)
    print("shift masks:", json.dumps(mask_info))
    print("cross-checks:", json.dumps(xcheck))
    assert xcheck["melW_max_abs_diff"] == 0.0
    assert xcheck["power_max_rel_diff_vs_fft64"] < 1e-5
    assert xcheck["image_max_abs_diff_vs_numpy_f32_coords"] < 1e-4
    assert xcheck["embedding_max_abs_diff_vs_mean"] < 1e-5
    assert xcheck["clipwise_max_abs_diff_vs_sigmoid_mean"] < 1e-6
    assert xcheck["framewise_is_32x_repeat"]

    clip_prob = cap["clipwise_output"]
    inside = float(((clip_prob > PROB_LO) & (clip_prob < PROB_HI)).float().mean())
    q = torch.quantile(clip_prob.flatten(), torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])).tolist()
    print(
        f"clipwise: min/q05/median/q95/max = {[round(v, 4) for v in q]}, fraction in ({PROB_LO},{PROB_HI}) = {inside:.3f}"
    )
    assert q[1] < 0.2 and q[3] > 0.8 and inside > 0.85, "clipwise probabilities do not spread as intended"

    tensors = {
        "waveform_head": waves[:, :HEAD_SAMPLES],
        "waveform_sum": torch.from_numpy(waves_np.astype(np.float64).sum(axis=1)).float(),
        "logmel": cap["logmel"][:, 0],
        "power_frame100": cap["power"][:, 0, POWER_FRAME],
        "image": cap["image"],
        "patch_tokens": cap["patch_tokens"],
        **{f"stage_out_{i}": cap[f"stage_out_{i}"] for i in range(len(model.layers))},
        "embedding": cap["latent_output"],
        "clipwise": cap["clipwise_output"],
        "framewise_32": torch.sigmoid(cap["tscam_logits"]).permute(0, 2, 1),
    }
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert torch.isfinite(v).all(), f"{k} has NaN/inf"

    # 4. Checkpoint(s).
    sd = official_state_dict(model)
    for k, v in sd.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), f"{k} has NaN/inf"
    torch.save(sd, args.out / "htsat_tiny.ckpt")
    buf = io.BytesIO()
    ordered = OrderedDict(sd)
    torch.save(ordered, buf)
    ordered_bytes = buf.getbuffer().nbytes
    ordered_path = args.out / "htsat_tiny_ordered.ckpt"
    if ordered_bytes < 1_000_000:
        ordered_path.write_bytes(buf.getvalue())
        print(f"wrote {ordered_path.name} ({ordered_bytes} bytes)")
    else:
        if ordered_path.exists():
            ordered_path.unlink()
        print(f"skipped htsat_tiny_ordered.ckpt: {ordered_bytes} bytes >= 1 MB (STFT matrices alone are 4.2 MB)")

    from safetensors.torch import save_file

    # One metadata entry only: safetensors writes a hash map, so several keys come out in a
    # random order and the file would not be byte-for-byte reproducible.
    meta = f"scripts/fixtures_audio.py; config {args.config.name}; tscam_weight_scale {tscam_factor:.6f}"
    save_file(tensors, str(args.out / "htsat_tiny_expected.safetensors"), metadata={"generator": meta})

    # 5. Key checks against the official list.
    if args.keys_file.exists():
        full_problems = compare_full_size_keys(args.keys_file)
        tiny_problems = compare_tiny_keys(model, cfg, args.keys_file)
        print(f"full-size key/shape/dtype differences vs official: {full_problems or 'none'}")
        print(f"tiny key-set differences vs official (depth-adjusted): {tiny_problems or 'none'}")
        if full_problems or tiny_problems:
            return 1
    else:
        print(f"WARNING: {args.keys_file} not found, key check against the official list skipped")

    print("tensors:")
    for k, v in tensors.items():
        print(f"  {k:16s} {list(v.shape)}")
    print("files:")
    for p in sorted(args.out.iterdir()):
        print(f"  {p.name:34s} {p.stat().st_size:>9d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
