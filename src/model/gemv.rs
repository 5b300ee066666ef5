//! One row times a dense f32 weight on the CPU, for decoding one token at a time: the product reads every weight
//! once, so it is bound by memory bandwidth, and libtorch's BLAS call streams well below it (`examples/bench_gemv.rs`
//! measures both over a token's weights of ruGPT-3 small). AVX2 and FMA when the CPU has them (checked at run
//! time), else libtorch does the product. The rows are split over libtorch's own OpenMP threads: threads of our own
//! would compete for the cores with OpenMP's, which spin for a while after each libtorch call.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

/// Below this many weights (256 KB) one thread does the product: handing it to OpenMP's team costs more than it
/// saves. Above it the team shares it, which a narrow model's every layer needs (SmolLM2's smallest, 576 × 192, is
/// 110,592 weights): with the old bound of 2^20 its blocks ran on one core while the other spun.
const SPLIT_WEIGHTS: usize = 1 << 16;

/// `x: [1, in]` times `w: [out, in]`ᵀ plus `bias`, as `[1, out]`, when this path applies: both f32, contiguous,
/// on the CPU, no gradient wanted, and a CPU with AVX2 and FMA. `None` sends the caller to libtorch.
pub fn row_times(w: &Tensor, x: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    row_times_on(w, x, bias, tch::get_num_threads().max(1) as c_uint)
}

/// [`row_times`] with a product big enough split over `threads` OpenMP threads.
fn row_times_on(w: &Tensor, x: &Tensor, bias: Option<&Tensor>, threads: c_uint) -> Option<Tensor> {
    let applies = x.dim() == 2
        && x.size()[0] == 1
        && w.dim() == 2
        && x.size()[1] == w.size()[1]
        && [w, x].iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
        && !(w.requires_grad() || x.requires_grad())
        && bias
            .is_none_or(|b| b.kind() == Kind::Float && b.device() == Device::Cpu && b.numel() == w.size()[0] as usize);
    // An empty tensor's data pointer may be null, which no slice may be built from, even of length 0.
    let cpu = Avx2Fma::detect().filter(|_| applies && w.numel() > 0)?;
    let (out, width) = (w.size()[0] as usize, w.size()[1] as usize);
    let y = Tensor::empty([1, out as i64], (Kind::Float, Device::Cpu));
    // SAFETY: `w`, `x` and `y` are contiguous f32 CPU tensors of the sizes read (none empty, so their pointers are
    // real), alive for the whole call; `y` is fresh, so nothing else reads or writes it.
    let (weights, row, dest) = unsafe {
        (
            std::slice::from_raw_parts(w.data_ptr() as *const f32, out * width),
            std::slice::from_raw_parts(x.data_ptr() as *const f32, width),
            std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, out),
        )
    };
    product_on(cpu, weights, row, dest, threads);
    Some(match bias {
        Some(b) => y + b.view([1, -1]),
        None => y,
    })
}

/// Proof that this CPU runs this module's product (AVX2 and FMA), for callers that multiply slices themselves:
/// only [`RowProduct::detect`] makes one, so [`RowProduct::apply`] cannot be called where it would not run.
#[derive(Debug, Clone, Copy)]
pub struct RowProduct(Avx2Fma);

impl RowProduct {
    pub fn detect() -> Option<Self> {
        Avx2Fma::detect().map(Self)
    }

    /// `dest[n] = weights[n, ..] · row` for each of `dest`'s rows, shared by libtorch's OpenMP threads when the
    /// product is big enough.
    pub fn apply(self, weights: &[f32], row: &[f32], dest: &mut [f32]) {
        product_on(self.0, weights, row, dest, tch::get_num_threads().max(1) as c_uint);
    }
}

/// The product on `threads` OpenMP threads when it has [`SPLIT_WEIGHTS`] weights or more, else on this one.
fn product_on(cpu: Avx2Fma, weights: &[f32], row: &[f32], dest: &mut [f32], threads: c_uint) {
    let rows = dest.len();
    match omp().filter(|_| rows * row.len() >= SPLIT_WEIGHTS) {
        Some(omp) => {
            assert!(weights.len() >= rows * row.len(), "{} weights for {rows} rows of {}", weights.len(), row.len());
            let job = Job { weights, row, dest: dest.as_mut_ptr(), rows, omp, cpu };
            // SAFETY: `job` outlives the parallel region, which returns only once every thread is done; the
            // threads write disjoint rows of `dest`.
            unsafe { (omp.parallel)(run_job, &job as *const Job as *mut c_void, threads, 0) };
        }
        None => dot_rows(cpu, weights, row, dest),
    }
}

/// `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on the team, this thread included.
type Parallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
/// `omp_get_thread_num()`, `omp_get_num_threads()`.
type Query = unsafe extern "C" fn() -> c_int;

/// The entry points of libtorch's OpenMP runtime that the split needs (libgomp's; Intel's runtime has them too).
struct Omp {
    parallel: Parallel,
    thread_num: Query,
    num_threads: Query,
}

/// The runtime libtorch loaded, looked up once; `None` (one thread does the product) if it has not these names,
/// or off Unix, where there is no `dlsym`.
#[cfg(not(unix))]
fn omp() -> Option<&'static Omp> {
    None
}

/// The runtime libtorch loaded, looked up once; `None` (one thread does the product) if it has not these names.
#[cfg(unix)]
fn omp() -> Option<&'static Omp> {
    static OMP: OnceLock<Option<Omp>> = OnceLock::new();
    OMP.get_or_init(|| {
        let find = |name: &std::ffi::CStr| {
            // SAFETY: a lookup in the symbols already loaded into the process.
            let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!found.is_null()).then_some(found)
        };
        let (parallel, thread_num, num_threads) =
            (find(c"GOMP_parallel")?, find(c"omp_get_thread_num")?, find(c"omp_get_num_threads")?);
        // SAFETY: these are the OpenMP runtime's functions of those names, whose C signatures are the fields'.
        unsafe {
            Some(Omp {
                parallel: std::mem::transmute::<*mut c_void, Parallel>(parallel),
                thread_num: std::mem::transmute::<*mut c_void, Query>(thread_num),
                num_threads: std::mem::transmute::<*mut c_void, Query>(num_threads),
            })
        }
    })
    .as_ref()
}

/// One product as the OpenMP team shares it: each thread takes its block of rows.
struct Job<'a> {
    weights: &'a [f32],
    row: &'a [f32],
    dest: *mut f32,
    rows: usize,
    omp: &'a Omp,
    cpu: Avx2Fma,
}

extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: `row_times` passes a `Job` that lives until the parallel region ends.
    let job = unsafe { &*(data as *const Job) };
    // SAFETY: OpenMP's own queries, called inside its parallel region.
    let (thread, threads) = unsafe { ((job.omp.thread_num)() as usize, (job.omp.num_threads)().max(1) as usize) };
    let per = job.rows.div_ceil(threads);
    let (start, end) = ((thread * per).min(job.rows), ((thread + 1) * per).min(job.rows));
    let width = job.row.len();
    // SAFETY: `dest` holds `rows` numbers, and each thread writes only its own block `start..end`.
    let dest = unsafe { std::slice::from_raw_parts_mut(job.dest.add(start), end - start) };
    dot_rows(job.cpu, &job.weights[start * width..end * width], job.row, dest);
}

/// Proof that this CPU has AVX2 and FMA: only [`Avx2Fma::detect`] makes one (none can exist off x86-64), so the
/// kernel that needs them can be a safe function.
#[derive(Debug, Clone, Copy)]
struct Avx2Fma(#[cfg(not(target_arch = "x86_64"))] std::convert::Infallible);

impl Avx2Fma {
    fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")).then_some(Self())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

/// `dest[n] = weights[n, ..] · row` for each of `dest`'s rows.
fn dot_rows(cpu: Avx2Fma, weights: &[f32], row: &[f32], dest: &mut [f32]) {
    assert!(
        weights.len() >= dest.len() * row.len(),
        "{} weights for {} rows of {}",
        weights.len(),
        dest.len(),
        row.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        let _ = cpu;
        // SAFETY: `cpu` proves AVX2 and FMA; the slices hold `dest.len()` rows of `row.len()` weights (asserted).
        unsafe { avx2::dot_rows(weights, row, dest) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    match cpu.0 {}
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
        if Avx2Fma::detect().is_none() {
            // Without AVX2 and FMA every product goes to libtorch.
            let (w, x) =
                (Tensor::ones([4, 8], (Kind::Float, Device::Cpu)), Tensor::ones([1, 8], (Kind::Float, Device::Cpu)));
            assert!(row_times(&w, &x, None).is_none());
            return;
        }
        // Widths with and without a tail past the 32-wide steps, and products big enough to be split over 3
        // OpenMP threads (unevenly: 2,051 rows).
        assert!(omp().is_some(), "libtorch's OpenMP runtime is found, so big products are split");
        for (out, width) in [(5, 7), (48, 64), (300, 100), (2048, 1024), (2051, 1024)] {
            // Drawn outside the seeded sections of the tests running beside this one (see `rng`).
            let (w, x, b) = crate::rng::unseeded(|| {
                let normal = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
                (normal(&[out, width]), normal(&[1, width]), normal(&[out]))
            });
            let ours = row_times_on(&w, &x, Some(&b), 3).unwrap();
            let theirs = x.linear(&w, Some(&b));
            let diff = (ours - theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{out}×{width}: {diff}");
        }
        let grad = Tensor::ones([1, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        assert!(row_times(&Tensor::ones([4, 8], (Kind::Float, Device::Cpu)), &grad, None).is_none());
        // Empty weights (no rows, or rows of width 0) go to libtorch: no slice is built over their pointers.
        let empty = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        assert!(row_times(&empty(&[0, 8]), &empty(&[1, 8]), None).is_none());
        assert!(row_times(&empty(&[4, 0]), &empty(&[1, 0]), None).is_none());
    }
}
