//! Training: the trainable model and its loss, data, optimizer, schedules, checkpoints, loop.

pub mod data;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod state;
