//! Allocator and thread tuning for tensor-heavy work.
//!
//! A training step allocates and frees many same-sized tensors of a few MB. glibc serves
//! blocks above 128 KB with a fresh `mmap` and returns them with `munmap`, so every step paid
//! for page faults and zeroing of pages it had just given back (measured: stage-1 encoder
//! backward 1.31 s -> 0.87 s per batch of 8 once freed memory is kept).

/// Serves every block from the heap (no `mmap` at all: `M_MMAP_THRESHOLD` stops at 32 MB, and
/// the full-size model's largest tensors, the audio mappers' 126 MB expansion weight, its
/// gradient and moments, were faulted in afresh at every step) and keeps freed memory in the
/// process instead of trimming it back to the kernel.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 * 1024 * 1024);
    }
}

/// One malloc arena for every thread. The checkpoint is read on rayon's threads, and freed
/// load-time buffers of their own arenas stayed in the process (explain, full model, int8: peak
/// RSS 475 -> 663 MB once the read went parallel; 470 MB with one arena, measured). For commands
/// that allocate the model once and do little else (explain, tag).
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How long an idle worker of candle's barrier pool (its elementwise binary ops) spins before it
/// parks, in spin-loop rounds: candle's default of 25 000 kept that thread spinning between ops,
/// on a 2-core machine ~5% of all CPU time (measured with perf), taken from the threads doing
/// the work. A few microseconds of spinning is enough to catch back-to-back ops.
const BARRIER_POOL_SPIN_LIMIT: &str = "200";

/// Lets idle candle worker threads park almost at once (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, unless
/// the user set it). Call before any tensor op: the pool reads it when it starts.
pub fn park_idle_threads() {
    default_env("CANDLE_BARRIER_POOL_SPIN_LIMIT", BARRIER_POOL_SPIN_LIMIT);
}

/// Runs candle's elementwise binary ops on the calling thread (`CANDLE_NUM_THREADS=1` sizes
/// candle's barrier pool, and nothing else, to no helper thread), unless the user set it. For
/// `adiff serve`, whose model workers run batches side by side on rayon's threads: the pool's
/// one helper thread then had no core of its own, and callers spun waiting for it (7.7% of the
/// server's CPU time in `BarrierGuard::drop`, and its lock serialised the workers' ops; 58-59
/// -> 62-68 req/s at concurrency 16, measured). Call before any tensor op, like
/// [`park_idle_threads`].
pub fn inline_elementwise_ops() {
    default_env("CANDLE_NUM_THREADS", "1");
}

/// Sets `var` to `value` unless the user set it. Only from `main`, before any other thread starts
/// (changing the environment then races with nothing).
fn default_env(var: &str, value: &str) {
    if std::env::var_os(var).is_none() {
        std::env::set_var(var, value);
    }
}
