//! Which vector instructions the CPU kernels use: the widest the CPU has, or narrower when
//! `--simd` (`GEMBATCH_SIMD`) asks, so an AVX-512 machine can run, test and measure the
//! code an AVX2-only or older CPU runs. Every level computes the same bits (a CLI test
//! compares the logits); only speed differs.

use std::sync::OnceLock;

use clap::ValueEnum;

/// Vector instructions, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// What the build targets (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA and F16C (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F (with VNNI where the CPU has it, for the quantized tiles).
    Avx512,
}

impl SimdLevel {
    /// The name `--simd` takes and the logs show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

/// What `--simd` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum SimdChoice {
    /// The widest vectors the CPU has.
    #[default]
    Auto,
    /// At most AVX2: the code an AVX2-only CPU runs.
    Avx2,
    /// gembatch's kernels without vector extensions (candle's K-quant fallback at most AVX2).
    Portable,
}

impl SimdChoice {
    fn cap(self) -> SimdLevel {
        match self {
            Self::Auto => SimdLevel::Avx512,
            Self::Avx2 => SimdLevel::Avx2,
            Self::Portable => SimdLevel::Portable,
        }
    }
}

static LEVEL: OnceLock<SimdLevel> = OnceLock::new();

/// The level the kernels use: the CPU's widest unless [`choose`] capped it first.
pub fn level() -> SimdLevel {
    *LEVEL.get_or_init(detected)
}

/// Caps the level for the rest of the process and returns it (the CPU's widest when it is
/// narrower than asked). The first kernel call fixes the level: a later, different choice
/// is refused, so one process never mixes levels.
pub fn choose(choice: SimdChoice) -> Result<SimdLevel, String> {
    let wanted = detected().min(choice.cap());
    let level = *LEVEL.get_or_init(|| wanted);
    if level == wanted {
        Ok(level)
    } else {
        Err(format!(
            "--simd {}: the kernels already run with {}; set it before the model loads",
            choice
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default(),
            level.name()
        ))
    }
}

/// [`choose`], and the same cap for candle's repacked K-quant kernels (types and shapes
/// gembatch's own do not take), which read `MISTRALRS_FORCE_AVX2` once (they have no
/// portable level: at most AVX2 is the nearest).
/// Call it only while the process has one thread: it may set that environment variable.
pub fn apply_before_threads(choice: SimdChoice) -> anyhow::Result<SimdLevel> {
    let level = choose(choice).map_err(anyhow::Error::msg)?;
    // Only when asked: left alone, candle takes AVX-VNNI on CPUs that have it without
    // AVX-512.
    if choice != SimdChoice::Auto {
        // SAFETY: the caller runs before any other thread exists, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var(CANDLE_AVX2_CAP, "1") };
    }
    Ok(level)
}

/// What candle's x86 repacked kernels read to stay on AVX2.
const CANDLE_AVX2_CAP: &str = "MISTRALRS_FORCE_AVX2";

/// The widest level this CPU supports.
fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        if avx2 && is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if avx2 {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

/// Defines `fn $name(args) -> ret` that runs `$body`, an `#[inline(always)]` function with
/// the same arguments, compiled for the widest vectors [`level`] allows: the compiler
/// vectorizes one loop three ways and the CPU runs the widest it may.
macro_rules! widest_vectors {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::model::simd::level() {
                    // SAFETY: `level` never reports more than the CPU has.
                    $crate::model::simd::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::model::simd::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::model::simd::SimdLevel::Portable => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use widest_vectors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_narrowest_to_widest() {
        assert!(SimdLevel::Portable < SimdLevel::Avx2);
        assert!(SimdLevel::Avx2 < SimdLevel::Avx512);
        assert_eq!(SimdChoice::Auto.cap(), SimdLevel::Avx512);
        assert_eq!(
            detected().min(SimdChoice::Portable.cap()),
            SimdLevel::Portable
        );
    }

    #[test]
    fn the_first_choice_holds_and_a_different_later_one_is_refused() {
        // Tests share the process: the level is whatever the first kernel call fixed.
        let level = level();
        let same = match level {
            SimdLevel::Portable if detected() != SimdLevel::Portable => SimdChoice::Portable,
            SimdLevel::Avx2 if detected() != SimdLevel::Avx2 => SimdChoice::Avx2,
            _ => SimdChoice::Auto,
        };
        assert_eq!(choose(same), Ok(level));
        if level != SimdLevel::Portable {
            let error = choose(SimdChoice::Portable).unwrap_err();
            assert!(error.contains("--simd portable"), "{error}");
            assert!(error.contains(level.name()), "{error}");
        }
    }

    widest_vectors! {
        fn doubled_sum(values: &[f32]) -> f32 = sum_twice;
    }

    #[inline(always)]
    fn sum_twice(values: &[f32]) -> f32 {
        values.iter().map(|v| v * 2.0).sum()
    }

    #[test]
    fn a_dispatched_function_computes_what_its_body_does() {
        let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.25).collect();
        assert_eq!(doubled_sum(&values), sum_twice(&values));
        assert_eq!(doubled_sum(&[]), 0.0);
    }
}
