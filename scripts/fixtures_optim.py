"""Reference AdamW trajectory for `tests/train_optim.rs` (torch.optim.AdamW, LambdaLR, clip_grad_norm_).

Writes `tests/fixtures/train/adamw.safetensors`. Run with `/work/venv/bin/python scripts/fixtures_optim.py`.
Gradients are exported per step (before clipping) so the Rust test feeds the same gradients instead
of re-deriving them; it then clips, steps and compares the final parameters and moments.

Tensors (f32 unless noted):
  init.<p>              initial parameter
  grad.<step>.<p>       raw gradient at step `step` (0-based, before clipping)
  norm                  [STEPS] total gradient norm returned by clip_grad_norm_ (pre-clip)
  lr                    [STEPS] f64, learning rate used at each step (LambdaLR, warm-up + cosine)
  lr_step               [STEPS] f64, LambdaLR values of the warm-up + step-decay schedule
  final.<p>             parameter after STEPS steps
  exp_avg.<p>, exp_avg_sq.<p>   AdamW moments after STEPS steps
Parameters: `w` [4, 3] and `u` [5] get weight decay, `b` [3] does not (its own param group).
"""

import math
import os

import torch
from safetensors.torch import save_file

STEPS = 20
WARMUP = 5
PEAK_LR = 0.2
MIN_LR = 0.02
WEIGHT_DECAY = 0.01
BETAS = (0.9, 0.999)
EPS = 1e-8
MAX_NORM = 1.0
SEED = 1234
STEP_WARMUP = 3
STEP_SIZE = 4
STEP_GAMMA = 0.5
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train", "adamw.safetensors")


def warmup_cosine(step):
    """Same formula as `LrSchedule::WarmupCosine::lr` in src/train/schedule.rs, as a LambdaLR factor."""
    if step < WARMUP:
        lr = PEAK_LR * (step + 1) / WARMUP
    else:
        progress = min(1.0, (step - WARMUP) / (STEPS - WARMUP))
        lr = MIN_LR + (PEAK_LR - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr / PEAK_LR


def warmup_step(step):
    """Same formula as `LrSchedule::WarmupStep::lr`, as a LambdaLR factor."""
    if step < STEP_WARMUP:
        return (step + 1) / STEP_WARMUP
    return STEP_GAMMA ** ((step - STEP_WARMUP) // STEP_SIZE)


def lambda_lr_values(factor):
    """The lr LambdaLR gives at each of STEPS steps (read before each optimizer step)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK_LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    out = []
    for _ in range(STEPS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    torch.manual_seed(SEED)
    params = {
        "w": torch.nn.Parameter(torch.randn(4, 3)),
        "u": torch.nn.Parameter(torch.randn(5)),
        "b": torch.nn.Parameter(torch.randn(3)),
    }
    x = torch.randn(8, 4)
    target = torch.randn(8, 3)
    z = torch.randn(5)
    out = {f"init.{n}": p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(
        [
            {"params": [params["w"], params["u"]], "weight_decay": WEIGHT_DECAY},
            {"params": [params["b"]], "weight_decay": 0.0},
        ],
        lr=PEAK_LR,
        betas=BETAS,
        eps=EPS,
        foreach=False,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
    norms, lrs = [], []
    for step in range(STEPS):
        opt.zero_grad()
        # Deterministic quadratic loss; its scale makes the early gradients exceed MAX_NORM so
        # that clipping is exercised on some steps and not on others.
        pred = x @ params["w"] + params["b"]
        loss = 0.6 * ((pred - target) ** 2).mean() + 0.15 * ((params["u"] - z) ** 2).sum()
        loss.backward()
        for n, p in params.items():
            out[f"grad.{step}.{n}"] = p.grad.detach().clone()
        norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM).item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for n, p in params.items():
        out[f"final.{n}"] = p.detach().clone()
        st = opt.state[p]
        out[f"exp_avg.{n}"] = st["exp_avg"].clone()
        out[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
    out["norm"] = torch.tensor(norms, dtype=torch.float32)
    out["lr"] = torch.tensor(lrs, dtype=torch.float64)
    out["lr_step"] = torch.tensor(lambda_lr_values(warmup_step), dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)
    clipped = sum(n > MAX_NORM for n in norms)
    print(f"wrote {OUT}: {len(out)} tensors, {clipped}/{STEPS} steps clipped, norms {min(norms):.4f}..{max(norms):.4f}")


if __name__ == "__main__":
    main()
