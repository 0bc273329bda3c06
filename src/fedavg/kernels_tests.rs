//! Kernel tests: the AVX2 add gives the portable code's bits.

use super::*;

/// Values of every kind the add meets: ordinary, tiny, huge, signed zeros, and (when
/// `bad`) NaN and infinities.
fn values(n: usize, seed: u64, bad: bool) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            match i % 97 {
                0 => 3.0e38,
                1 => -1.0e-40,
                2 => -0.0,
                3 if bad => f32::NAN,
                4 if bad => f32::NEG_INFINITY,
                _ => r * 1.0e3,
            }
        })
        .collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bits, with every NaN the same (which NaN an add of two returns is the CPU's choice).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// [`Acc::add_lanes`] as dispatched (AVX2 where the CPU has it) against
/// [`add_lanes_portable`], on lengths around the step widths, starting from lanes that
/// already hold values.
#[test]
fn add_lanes_f32_is_the_portable_code_bit_for_bit() {
    for &n in &[0usize, 1, 7, 8, 15, 16, 17, 63, 2047, 2048, 2049, 5000] {
        for bad in [false, true] {
            let d = values(n, n as u64 + 1, bad);
            let start = values(n, 7, false);
            let (mut fast, mut slow) = (start.clone(), start);
            let lanes = |k: f32| std::array::from_fn::<f32, LANES, _>(|i| i as f32 * k);
            let (mut m1, mut p1, mut m2, mut p2) = (lanes(2.0), lanes(0.0), lanes(2.0), lanes(0.0));
            f32::add_lanes(&mut fast, &d, 0.37, &mut m1, &mut p1);
            add_lanes_portable(&mut slow, &d, 0.37, &mut m2, &mut p2);
            assert_eq!(bits(&fast), bits(&slow), "n {n}, bad {bad}");
            let fold = |m: &[f32]| m.iter().copied().fold(0.0f32, f32::max);
            assert_eq!(fold(&m1).to_bits(), fold(&m2).to_bits(), "n {n}");
            let finite = |p: &[f32]| p.iter().all(|&v| v == 0.0);
            assert_eq!(finite(&p1), finite(&p2), "n {n}");
            assert_eq!(finite(&p1), !(bad && n > 3), "n {n}");
        }
    }
}

/// The whole add, in place and through the converting blocks (with a base), into f32
/// and f64 sums: the sums are `acc + c * d` element by element, and the scan finds the
/// largest magnitude and the non-finite values.
#[test]
fn add_scan_adds_and_scans() {
    for &n in &[1usize, 9, 4099] {
        let x = values(n, 3, false);
        let b = values(n, 5, false);
        let (xb, bb) = (bytes_of(&x), bytes_of(&b));
        let mut acc = vec![1.0f32; n];
        let s = add_scan(&mut acc, DType::F32, &xb, None, 0.5);
        for i in 0..n {
            assert_eq!(acc[i].to_bits(), (1.0f32 + 0.5f32 * x[i]).to_bits(), "{i}");
        }
        let want = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert_eq!(s.max_abs, want as f64);
        assert!(!s.non_finite);
        let mut acc = vec![0.0f64; n];
        let s = add_scan(&mut acc, DType::F32, &xb, Some(&bb), 2.0);
        for i in 0..n {
            let d = x[i] as f64 - b[i] as f64;
            assert_eq!(acc[i].to_bits(), (2.0 * d).to_bits(), "{i}");
        }
        assert!(!s.non_finite);
        let bad = bytes_of(&values(n.max(5), 3, true));
        let mut acc = vec![0.0f32; n.max(5)];
        assert!(add_scan(&mut acc, DType::F32, &bad, None, 1.0).non_finite);
    }
}

/// Speed of the add against blake3 over the same bytes, on one thread (run by hand:
/// `cargo test --release --lib add_timing -- --ignored --nocapture`).
#[test]
#[ignore]
fn add_timing() {
    let n = 64 << 10;
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.001).sin()).collect();
    let mut acc = vec![0f32; n];
    let reps = 3000;
    let gb = (n * 4 * reps) as f64 / 1e9;
    let lanes = || [0f32; LANES];
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let (mut m, mut p) = (lanes(), lanes());
            add_lanes_portable(&mut acc, &v, 0.5, &mut m, &mut p);
            std::hint::black_box((m, p));
        }
        let portable = gb / t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let (mut m, mut p) = (lanes(), lanes());
            f32::add_lanes(&mut acc, &v, 0.5, &mut m, &mut p);
            std::hint::black_box((m, p));
        }
        let dispatched = gb / t.elapsed().as_secs_f64();
        let bytes = bytes_of(&v);
        let t = std::time::Instant::now();
        for _ in 0..reps {
            std::hint::black_box(blake3::hash(&bytes));
        }
        let b3 = gb / t.elapsed().as_secs_f64();
        eprintln!("portable {portable:.1}, dispatched {dispatched:.1}, blake3 {b3:.1} GB/s");
    }
}
