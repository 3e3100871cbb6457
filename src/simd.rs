//! Run-time choice of the widest vector unit for the hot elementwise loops of the fused ops and
//! the optimizer. The crate is built for baseline x86-64 (SSE2, what every x86-64 CPU runs), which
//! left those loops compute-bound; [`widest_simd`] compiles a loop body also for AVX-512 and AVX2
//! and picks the widest the CPU has.

/// Defines `fn $name(args) { body }` whose body is compiled three times (AVX-512F, AVX2, the
/// baseline) and run in the widest variant the CPU supports. Arguments must be plain
/// `name: Type`. No fused multiply-add is enabled: Rust never contracts `a * b + c` without it,
/// so every variant rounds exactly as the baseline does.
macro_rules! widest_simd {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use widest_simd;
