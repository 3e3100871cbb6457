//! Progress bars on stderr, one style for every long job (embedding, dataset building, training,
//! downloads). A module of its own, below `cli/`, `train/` and `hub`, so that each of them can show
//! progress without importing another.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The one bar style of the project: `{msg} [=====>    ] ...`.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar over `n` items named `what`, with the time left.
pub fn items(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(style("{msg} [{bar:30}] {pos}/{len} ({eta})"));
    pb.set_message(what.to_string());
    pb
}

/// [`items`] that also shows the rate (items per second), for jobs whose speed varies.
pub fn items_with_rate(n: usize, what: &str) -> ProgressBar {
    let pb = items(n, what);
    pb.set_style(style("{msg} [{bar:30}] {pos}/{len} {per_sec} ({eta})"));
    pb
}

/// A byte bar for a download into `dest`, starting at `position` (a resumed download); a spinner
/// when the total is unknown. Hidden unless `show` (and, as every bar, unless stderr is a terminal).
pub fn bytes(total: Option<u64>, position: u64, show: bool, dest: &Path) -> ProgressBar {
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(total, target);
    bar.set_style(style(match total {
        Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ({eta})",
        None => "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
    }));
    bar.set_message(
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar.set_position(position);
    bar
}
