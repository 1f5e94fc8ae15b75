//! `tanhf` exactly as this platform's libm computes it (glibc's, from fdlibm: `s_tanhf.c`
//! over `s_expm1f.c`, plain f32 arithmetic), written without branches so that a loop of it
//! vectorizes. Gemma's GELU runs `tanhf` once per MLP value; one call into libm per value
//! was a fifth of a prefill, and any other rounding moves this model's greedy choices away
//! from llama.cpp's, so the port keeps every operation and its order (checked against libm
//! over millions of inputs in the tests, and once over every finite f32 against Debian 12's
//! glibc 2.36). A libm that computes `tanhf` otherwise (musl, a correctly rounded one)
//! fails those tests: the port is glibc's, not that libm's.

/// `tanh(x)`, bit for bit glibc's `tanhf` for every finite `x`.
#[inline(always)]
pub fn tanhf(x: f32) -> f32 {
    let bits = x.to_bits();
    let magnitude = bits & 0x7fff_ffff;
    let ax = f32::from_bits(magnitude);
    // |x| >= 1: 1 - 2 / (expm1(2|x|) + 2); below: -t / (t + 2) with t = expm1(-2|x|).
    let large = magnitude >= 0x3f80_0000;
    let t = expm1f(if large { 2.0 * ax } else { -2.0 * ax });
    let z = if large {
        1.0 - 2.0 / (t + 2.0)
    } else {
        -t / (t + 2.0)
    };
    // |x| >= 22: 1 - 1e-30, which is 1; |x| < 2^-55: x * (1 + x), sign included.
    let z = if magnitude >= 0x41b0_0000 { 1.0 } else { z };
    let signed = if (bits as i32) < 0 { -z } else { z };
    if magnitude < 0x2400_0000 {
        x * (1.0 + x)
    } else {
        signed
    }
}

/// glibc's `expm1f` for `-2 < x < 88.7` (what `tanhf` passes), every branch computed
/// and the right one selected.
#[inline(always)]
fn expm1f(x: f32) -> f32 {
    // fdlibm's constants, by their bits.
    const LN2_HI: f32 = f32::from_bits(0x3f31_7180);
    const LN2_LO: f32 = f32::from_bits(0x3717_f7d1);
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    const Q1: f32 = f32::from_bits(0xbd08_8889);
    const Q2: f32 = f32::from_bits(0x3ad0_0d01);
    const Q3: f32 = f32::from_bits(0xb8a6_70cd);
    const Q4: f32 = f32::from_bits(0x3686_7e54);
    const Q5: f32 = f32::from_bits(0xb457_edbb);

    let input = x;
    let bits = x.to_bits();
    let negative = (bits as i32) < 0;
    let hx = bits & 0x7fff_ffff;

    // Argument reduction: x = k ln2 + (hi - lo), with c the rounding error of hi - lo.
    let near = hx < 0x3f85_1592; // |x| < 1.5 ln2: k = +-1
    let k_far = truncate_to_i32(INV_LN2 * x + if negative { -0.5 } else { 0.5 });
    let k_near = if negative { -1 } else { 1 };
    let reduce = hx > 0x3eb1_7218; // |x| > 0.5 ln2
    let k = if reduce {
        if near { k_near } else { k_far }
    } else {
        0
    };
    let (hi, lo) = if near {
        if negative {
            (x + LN2_HI, -LN2_LO)
        } else {
            (x - LN2_HI, LN2_LO)
        }
    } else {
        let t = k_far as f32;
        (x - t * LN2_HI, t * LN2_LO)
    };
    let reduced = hi - lo;
    let c = (hi - reduced) - lo;
    let x = if reduce { reduced } else { x };

    // x is now in the primary range.
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - t) / (6.0 - x * t));
    let unreduced = x - (x * e - hxs);

    let e = x * (e - c) - c;
    let e = e - hxs;
    let minus_one = 0.5 * (x - e) - 0.5;
    let plus_one = if x < -0.25 {
        -2.0 * (e - (x + 0.5))
    } else {
        1.0 + 2.0 * (x - e)
    };
    let shift = (k << 23) as u32;
    let scaled = |y: f32| f32::from_bits(y.to_bits().wrapping_add(shift));
    let outer = scaled(1.0 - (e - x)) - 1.0; // k <= -2 or k > 56
    let small_k = {
        // 2 <= k < 23: t = 1 - 2^-k.
        let t = f32::from_bits(0x3f80_0000u32.wrapping_sub(0x0100_0000u32 >> (k & 31)));
        scaled(t - (e - x))
    };
    let big_k = {
        // 23 <= k <= 56: t = 2^-k.
        let t = f32::from_bits(((0x7f - k) << 23) as u32);
        scaled((x - (e + t)) + 1.0)
    };
    let result = match k {
        0 => unreduced,
        -1 => minus_one,
        1 => plus_one,
        2..=22 => small_k,
        23..=56 => big_k,
        _ => outer,
    };
    // |x| < 2^-25 returns x itself.
    if hx < 0x3300_0000 { input } else { result }
}

/// `v as i32` for a `v` that is NaN (giving 0, as `as` does) or of magnitude below 10^9
/// (what `expm1f` converts; anything larger is clamped, and `tanhf` discards those results),
/// written so that it vectorizes: a saturating `as` compiles to one scalar conversion and
/// two checks per lane, a fifth of the whole GELU loop.
#[inline(always)]
fn truncate_to_i32(v: f32) -> i32 {
    let v = if v.is_nan() { 0.0 } else { v.clamp(-1e9, 1e9) };
    // SAFETY: `v` is finite and within i32's range.
    unsafe { v.to_int_unchecked::<i32>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `stride`-th f32 bit pattern from `start` to `end` (sign-magnitude order).
    fn check_range(start: u32, end: u32, stride: u32) -> usize {
        let mut checked = 0;
        for magnitude in (start..end).step_by(stride as usize) {
            for bits in [magnitude, magnitude | 0x8000_0000] {
                let x = f32::from_bits(bits);
                let (ours, libm) = (tanhf(x), x.tanh());
                assert_eq!(
                    ours.to_bits(),
                    libm.to_bits(),
                    "tanhf({x:e}) = {ours:e}, libm {libm:e}"
                );
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn matches_libm_bit_for_bit_across_the_range() {
        // From 2^-60 (the tiny branch) past 22 (the saturated one), about 12 million inputs,
        // every expm1f branch among them.
        let checked = check_range(0x2180_0000, 0x41c0_0000, 97);
        assert!(checked > 10_000_000, "{checked}");
    }

    #[test]
    fn matches_libm_densely_where_expm1f_switches_branches() {
        // 2|x| at 0.5 ln2 and 1.5 ln2 (reduction), 2^-25 (identity), k = 23 and 57 (the
        // exponent paths); |x| at 1 and 22 (tanhf's own switches) and 2^-55 (its tiny one).
        let edges = [
            0.173_286_8f32,
            0.519_860_4,
            1.49e-8,
            7.798,
            19.58,
            1.0,
            22.0,
            2.8e-17,
        ];
        for edge in edges {
            let bits = edge.to_bits();
            check_range(bits - 20_000, bits + 20_000, 1);
        }
    }

    #[test]
    fn infinities_and_values_past_the_conversion_clamp_saturate_as_libm_does() {
        for x in [f32::INFINITY, 3.0e9, 1.0e30, f32::MAX] {
            assert_eq!(tanhf(x).to_bits(), x.tanh().to_bits(), "{x}");
            assert_eq!(tanhf(-x).to_bits(), (-x).tanh().to_bits(), "{x}");
        }
        assert_eq!(truncate_to_i32(f32::NAN), 0);
        assert_eq!(truncate_to_i32(-2.9), -2);
        assert_eq!(truncate_to_i32(128.5), 128);
    }

    #[test]
    fn zero_keeps_its_sign() {
        assert_eq!(tanhf(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanhf(-0.0).to_bits(), (-0.0f32).to_bits());
    }
}
