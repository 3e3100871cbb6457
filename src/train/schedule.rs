//! Learning-rate schedules. `lr(step)` is a pure function of the 0-based index of the optimizer
//! step about to be taken, so a resumed run needs only the step count to continue the curve.
//!
//! The same values come out of PyTorch's own schedulers, reading the lr before
//! `optimizer.step()` and calling `scheduler.step()` after it: warm-up `LinearLR(1 / W, 1,
//! total_iters = W - 1)`, then `CosineAnnealingLR(T_max = T - W, eta_min = min_lr)` (or `StepLR`)
//! joined by `SequentialLR(milestones = [W])` (`tests/train_optim.rs` against
//! `scripts/fixtures_optim.py`). Note `total_iters = W - 1`: with the usual `W` PyTorch reaches
//! the peak one step later.
//!
//! Warm-up is linear from `peak_lr / warmup_steps` at step 0 to `peak_lr` at step
//! `warmup_steps - 1` (not from 0, so the first step is not wasted).

use serde::{Deserialize, Serialize};

use crate::error::{AdiffError, Result};

/// A learning-rate schedule; in JSON, `{"kind": "warmup_cosine", "peak_lr": 1e-4, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr(s) = lr`.
    Constant { lr: f64 },
    /// ```text
    /// s <  W:  peak_lr * (s + 1) / W
    /// s >= W:  min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * p)),
    ///          p = min(1, (s - W) / (T - W))          (p = 1 when T == W)
    /// ```
    /// with `W = warmup_steps`, `T = total_steps`; `min_lr` from step `T` on.
    WarmupCosine {
        peak_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    },
    /// ```text
    /// s <  W:  peak_lr * (s + 1) / W
    /// s >= W:  peak_lr * gamma ^ floor((s - W) / step_size)
    /// ```
    /// (the paper's "warmup and step decay", Appendix G).
    WarmupStep {
        peak_lr: f64,
        warmup_steps: u64,
        step_size: u64,
        gamma: f64,
    },
}

impl LrSchedule {
    /// The learning rate for the 0-based optimizer step `step` (formulas on the variants).
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::WarmupCosine {
                peak_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => {
                if step < warmup_steps {
                    return warmup(peak_lr, step, warmup_steps);
                }
                let decay_steps = total_steps.saturating_sub(warmup_steps);
                let progress = if decay_steps == 0 {
                    1.0
                } else {
                    ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0)
                };
                min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::WarmupStep {
                peak_lr,
                warmup_steps,
                step_size,
                gamma,
            } => {
                if step < warmup_steps {
                    return warmup(peak_lr, step, warmup_steps);
                }
                let decays = (step - warmup_steps) / step_size.max(1);
                peak_lr * gamma.powf(decays as f64)
            }
        }
    }

    /// Rejects negative or non-finite rates, `min_lr > peak_lr`, `warmup_steps > total_steps`, a
    /// zero `step_size` and `gamma` outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AdiffError::Config(format!("lr schedule: {m}")));
        let rate_ok = |x: f64| x >= 0.0 && x.is_finite();
        match *self {
            LrSchedule::Constant { lr } if !rate_ok(lr) => bad(format!("lr = {lr} must be >= 0")),
            LrSchedule::Constant { .. } => Ok(()),
            LrSchedule::WarmupCosine {
                peak_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => {
                if !rate_ok(peak_lr) || !rate_ok(min_lr) || min_lr > peak_lr {
                    bad(format!(
                        "need 0 <= min_lr ({min_lr}) <= peak_lr ({peak_lr})"
                    ))
                } else if total_steps == 0 || warmup_steps > total_steps {
                    bad(format!(
                        "need 0 < total_steps ({total_steps}) and warmup_steps ({warmup_steps}) <= total_steps"
                    ))
                } else {
                    Ok(())
                }
            }
            LrSchedule::WarmupStep {
                peak_lr,
                step_size,
                gamma,
                ..
            } => {
                if !rate_ok(peak_lr) {
                    bad(format!("peak_lr = {peak_lr} must be >= 0"))
                } else if step_size == 0 {
                    bad("step_size must be > 0".into())
                } else if !(gamma > 0.0 && gamma <= 1.0) {
                    bad(format!("gamma = {gamma} must be in (0, 1]"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn warmup(peak_lr: f64, step: u64, warmup_steps: u64) -> f64 {
    peak_lr * (step + 1) as f64 / warmup_steps as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_endpoints() {
        let s = LrSchedule::WarmupCosine {
            peak_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 4,
            total_steps: 14,
        };
        s.validate().unwrap();
        assert_eq!(s.lr(0), 1e-3 / 4.0);
        assert_eq!(s.lr(3), 1e-3);
        assert_eq!(s.lr(4), 1e-3);
        assert!((s.lr(9) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-15);
        assert_eq!(s.lr(14), 1e-5);
        assert_eq!(s.lr(1000), 1e-5);
    }

    #[test]
    fn cosine_without_decay_phase_holds_min() {
        let s = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            min_lr: 0.5,
            warmup_steps: 2,
            total_steps: 2,
        };
        assert_eq!(s.lr(1), 1.0);
        assert_eq!(s.lr(2), 0.5);
    }

    #[test]
    fn step_decay() {
        let s = LrSchedule::WarmupStep {
            peak_lr: 1e-4,
            warmup_steps: 2,
            step_size: 3,
            gamma: 0.5,
        };
        s.validate().unwrap();
        let got: Vec<f64> = (0..9).map(|i| s.lr(i)).collect();
        let want = [5e-5, 1e-4, 1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 5e-5, 2.5e-5];
        assert_eq!(got, want);
    }

    #[test]
    fn serde_is_tagged_and_strict() {
        let s: LrSchedule = serde_json::from_str(
            r#"{"kind": "warmup_step", "peak_lr": 1e-4, "warmup_steps": 10, "step_size": 100, "gamma": 0.1}"#,
        )
        .unwrap();
        assert!(matches!(s, LrSchedule::WarmupStep { step_size: 100, .. }));
        let round: LrSchedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(round, s);
        assert!(serde_json::from_str::<LrSchedule>(
            r#"{"kind": "constant", "lr": 1.0, "lr2": 2.0}"#
        )
        .is_err());
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind": "linear", "lr": 1.0}"#).is_err());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad = [
            LrSchedule::Constant { lr: -1.0 },
            LrSchedule::WarmupCosine {
                peak_lr: 1.0,
                min_lr: 2.0,
                warmup_steps: 0,
                total_steps: 1,
            },
            LrSchedule::WarmupCosine {
                peak_lr: 1.0,
                min_lr: 0.0,
                warmup_steps: 5,
                total_steps: 4,
            },
            LrSchedule::WarmupStep {
                peak_lr: 1.0,
                warmup_steps: 0,
                step_size: 0,
                gamma: 0.5,
            },
            LrSchedule::WarmupStep {
                peak_lr: 1.0,
                warmup_steps: 0,
                step_size: 1,
                gamma: 1.5,
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
