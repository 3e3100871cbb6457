//! Training: optimizer, learning-rate schedules and resumable training checkpoints.
pub mod optim;
pub mod schedule;
pub mod state;
