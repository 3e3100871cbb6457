//! Training: the trainable model and its loss, data, optimizer, schedules, checkpoints, loop.

pub mod average;
pub mod caption_lm_task;
pub mod config;
pub mod data;
pub mod dist;
pub mod explain_task;
pub mod lm_task;
pub mod loss;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod state;
pub mod tagging_task;
pub mod trainer;
pub mod vars;
