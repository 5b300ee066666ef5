//! One row times a dense f32 weight on the CPU, for decoding one token at a time: the product reads every weight
//! once, so it is bound by memory bandwidth, and libtorch's BLAS call streams well below it (10.2 GB/s over a
//! token's weights of ruGPT-3 small on 2 cores against 15.0 for this loop; `examples/bench_gemv.rs`). AVX2 and FMA
//! when the CPU has them (checked at run time), else libtorch does the product.

use tch::{Device, Kind, Tensor};

/// Below this many weights one thread does the product: spawning costs more than it saves.
const SPLIT_WEIGHTS: usize = 1 << 20;

/// `x: [1, in]` times `w: [out, in]`ᵀ plus `bias`, as `[1, out]`, when this path applies: both f32, contiguous,
/// on the CPU, no gradient wanted, and a CPU with AVX2 and FMA. `None` sends the caller to libtorch.
pub fn row_times(w: &Tensor, x: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    let applies = x.dim() == 2
        && x.size()[0] == 1
        && w.dim() == 2
        && x.size()[1] == w.size()[1]
        && [w, x].iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
        && !(w.requires_grad() || x.requires_grad())
        && bias.is_none_or(|b| b.kind() == Kind::Float && b.device() == Device::Cpu && b.numel() == w.size()[0] as usize)
        && simd();
    if !applies {
        return None;
    }
    let (out, width) = (w.size()[0] as usize, w.size()[1] as usize);
    let y = Tensor::empty([1, out as i64], (Kind::Float, Device::Cpu));
    // SAFETY: `w`, `x` and `y` are contiguous f32 CPU tensors of the sizes read, alive for the whole call; `y` is
    // fresh, so nothing else reads or writes it.
    let (weights, row, dest) = unsafe {
        (
            std::slice::from_raw_parts(w.data_ptr() as *const f32, out * width),
            std::slice::from_raw_parts(x.data_ptr() as *const f32, width),
            std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, out),
        )
    };
    let threads = if out * width < SPLIT_WEIGHTS { 1 } else { tch::get_num_threads().max(1) as usize };
    let per = out.div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = dest.chunks_mut(per).zip(weights.chunks(per * width)).peekable();
        while let Some((dest, weights)) = chunks.next() {
            if chunks.peek().is_none() {
                dot_rows(weights, row, dest);
            } else {
                s.spawn(move || dot_rows(weights, row, dest));
            }
        }
    });
    Some(match bias {
        Some(b) => y + b.view([1, -1]),
        None => y,
    })
}

fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dest[n] = weights[n, ..] · row` for each of `dest`'s rows.
fn dot_rows(weights: &[f32], row: &[f32], dest: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reached only through `row_times`, which checked AVX2 and FMA; the slices hold `dest.len()` rows of
    // `row.len()` weights.
    unsafe {
        avx2::dot_rows(weights, row, dest)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("row_times checks for AVX2 first: {} {} {}", weights.len(), row.len(), dest.len())
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Four 8-lane accumulators a row (the loads of one do not wait on the others' sums), the tail in scalars.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(weights: &[f32], row: &[f32], dest: &mut [f32]) {
        let k = row.len();
        let x = row.as_ptr();
        for (n, out) in dest.iter_mut().enumerate() {
            let w = weights.as_ptr().add(n * k);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= k {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i + 8 * j)), _mm256_loadu_ps(x.add(i + 8 * j)), *a);
                }
                i += 32;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            let mut total: f32 = lanes.iter().sum();
            while i < k {
                total += *w.add(i) * *x.add(i);
                i += 1;
            }
            *out = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_times_a_weight_is_libtorchs_product() {
        if !simd() {
            return;
        }
        // Widths with and without a tail past the 32-wide steps, and a product big enough to be split.
        for (out, width) in [(5, 7), (48, 64), (300, 100), (2048, 1024)] {
            let w = Tensor::randn([out, width], (Kind::Float, Device::Cpu));
            let x = Tensor::randn([1, width], (Kind::Float, Device::Cpu));
            let b = Tensor::randn([out], (Kind::Float, Device::Cpu));
            let ours = row_times(&w, &x, Some(&b)).unwrap();
            let theirs = x.linear(&w, Some(&b));
            let diff = (ours - theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{out}×{width}: {diff}");
        }
        let grad = Tensor::randn([1, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        assert!(row_times(&Tensor::ones([4, 8], (Kind::Float, Device::Cpu)), &grad, None).is_none());
    }
}
