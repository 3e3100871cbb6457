"""Reference AdamW trajectory and learning-rate schedules for `tests/train_optim.rs`
(torch.optim.AdamW, clip_grad_norm_, and PyTorch's own schedulers).

Writes `tests/fixtures/train/adamw.safetensors`. Run with `/work/venv/bin/python scripts/fixtures_optim.py`.
Gradients are exported per step (before clipping) so the Rust test feeds the same gradients instead
of re-deriving them; it then clips, steps and compares the final parameters and moments.

Tensors (f32 unless noted):
  init.<p>              initial parameter
  grad.<step>.<p>       raw gradient at step `step` (0-based, before clipping)
  norm                  [STEPS] total gradient norm returned by clip_grad_norm_ (pre-clip)
  lr                    [STEPS] f64, learning rate AdamW was given at each step (LambdaLR of our
                        warm-up + cosine formula: the trajectory's input, not a schedule check)
  sched.<name>          [n] f64, lr read before each of n optimizer steps from PyTorch's own
                        schedulers (no copy of our formula), configs in SCHEDULES below
  final.<p>             parameter after STEPS steps
  exp_avg.<p>, exp_avg_sq.<p>   AdamW moments after STEPS steps
Parameters: `w` [4, 3] and `u` [5] get weight decay, `b` [3] does not (its own param group).

Schedules in PyTorch's terms (W warm-up steps, T total steps, lr read before `optimizer.step()`,
`scheduler.step()` after it):
  warm-up      LinearLR(start_factor=1/W, end_factor=1, total_iters=W-1): peak/W at step 0, peak
               at step W-1 (LinearLR's usual total_iters=W would reach peak one step later)
  cosine       CosineAnnealingLR(T_max=T-W, eta_min=min_lr) from step W (SequentialLR milestone W):
               peak at step W, min_lr at step T (T == W has no cosine phase: T_max = 0 divides by
               zero in torch, and the trainer never takes step T, so only steps 0..T-1 are kept)
  step decay   StepLR(step_size, gamma) from step W
  constant     no scheduler after the warm-up (LinearLR holds end_factor once done)
"""

import math
import os
import warnings

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
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train", "adamw.safetensors")


def warmup_cosine(step):
    """Same formula as `LrSchedule::WarmupCosine::lr` in src/train/schedule.rs, as a LambdaLR factor."""
    if step < WARMUP:
        lr = PEAK_LR * (step + 1) / WARMUP
    else:
        progress = min(1.0, (step - WARMUP) / (STEPS - WARMUP))
        lr = MIN_LR + (PEAK_LR - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr / PEAK_LR


# name: (decay, peak_lr, warmup_steps, steps to read, decay parameters). The Rust test builds the
# same schedules through `TrainConfig::schedule(total_steps)`, as the trainer does.
SCHEDULES = {
    # The trajectory's schedule, one step past the end (step T gives min_lr).
    "cosine_w5_t20": ("cosine", PEAK_LR, WARMUP, STEPS + 1, {"total": STEPS, "min_lr": MIN_LR}),
    # No warm-up, decay to 0.
    "cosine_w0_t12_min0": ("cosine", 1e-3, 0, 13, {"total": 12, "min_lr": 0.0}),
    # One warm-up step (LinearLR with total_iters = 0).
    "cosine_w1_t10": ("cosine", 5e-4, 1, 11, {"total": 10, "min_lr": 1e-5}),
    # One cosine step after the warm-up.
    "cosine_w7_t8": ("cosine", 0.1, 7, 9, {"total": 8, "min_lr": 0.01}),
    # Warm-up as long as the run (no cosine phase): the steps the trainer takes.
    "cosine_w6_t6": ("cosine", 0.3, 6, 6, {"total": 6, "min_lr": 0.03}),
    "step_w3": ("step", PEAK_LR, 3, STEPS, {"step_size": 4, "gamma": 0.5}),
    "step_w0": ("step", 2e-4, 0, 12, {"step_size": 3, "gamma": 0.1}),
    "constant_w4": ("constant", 0.05, 4, 10, {}),
    "constant_w0": ("constant", 0.05, 0, 5, {}),
}


def torch_schedule_values(decay, peak_lr, warmup, n, kw):
    """The lr PyTorch's own schedulers give before each of `n` steps of a real optimizer."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=peak_lr)
    scheds = []
    if warmup > 0:
        scheds.append(torch.optim.lr_scheduler.LinearLR(
            opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1))
    if decay == "cosine" and kw["total"] > warmup:
        scheds.append(torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=kw["total"] - warmup, eta_min=kw["min_lr"]))
    elif decay == "step":
        scheds.append(torch.optim.lr_scheduler.StepLR(opt, step_size=kw["step_size"], gamma=kw["gamma"]))
    if len(scheds) == 2:
        sched = torch.optim.lr_scheduler.SequentialLR(opt, scheds, milestones=[warmup])
    else:
        sched = scheds[0] if scheds else None
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        (param ** 2).sum().backward()
        opt.step()
        if sched is not None:
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
    # SequentialLR steps the next scheduler with an explicit epoch at its milestone, which torch
    # reports as deprecated; the values are the point here.
    warnings.filterwarnings("ignore", message="The epoch parameter")
    for name, (decay, peak_lr, warmup, n, kw) in SCHEDULES.items():
        out[f"sched.{name}"] = torch.tensor(
            torch_schedule_values(decay, peak_lr, warmup, n, kw), dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)
    clipped = sum(n > MAX_NORM for n in norms)
    print(f"wrote {OUT}: {len(out)} tensors, {clipped}/{STEPS} steps clipped, norms {min(norms):.4f}..{max(norms):.4f}")


if __name__ == "__main__":
    main()
