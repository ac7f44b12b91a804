//! The cost model of an H200's driver calls: what each virtual-memory call and PyTorch's
//! `cudaMalloc`/`cudaFree` cost, by size, as measured on the H200. The simulated device charges
//! these for every call it is asked to make.

use alloc::vec::Vec;

const MIB: u64 = 1 << 20;

/// A cost that depends on a size: points `(bytes, microseconds)` interpolated linearly in
/// `log2(bytes)`, constant below the first point and extended along the last slope above the last.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeCurve(pub Vec<(u64, f64)>);

impl SizeCurve {
    /// A curve through the points `(sizes_mib[i] MiB, us[i])`.
    pub fn at_mib(sizes_mib: &[u64], us: &[f64]) -> Self {
        SizeCurve(
            sizes_mib
                .iter()
                .map(|&m| m * MIB)
                .zip(us.iter().copied())
                .collect(),
        )
    }

    /// A cost that ignores the size.
    pub fn flat(us: f64) -> Self {
        SizeCurve(alloc::vec![(1, us)])
    }

    /// The cost in microseconds for `bytes`.
    pub fn at(&self, bytes: u64) -> f64 {
        let pts = &self.0;
        match pts.len() {
            0 => 0.0,
            1 => pts[0].1,
            n => {
                if bytes <= pts[0].0 {
                    return pts[0].1;
                }
                let x = log2(bytes);
                let seg = pts
                    .windows(2)
                    .position(|w| bytes <= w[1].0)
                    .unwrap_or(n - 2);
                let (a, b) = (pts[seg], pts[seg + 1]);
                let (xa, xb) = (log2(a.0), log2(b.0));
                let t = if xb > xa { (x - xa) / (xb - xa) } else { 0.0 };
                (a.1 + t * (b.1 - a.1)).max(0.0)
            }
        }
    }
}

fn log2(x: u64) -> f64 {
    // no_std: count the bits, then refine with the fraction of the next power (good to ~0.1 bit).
    let lz = 63 - x.leading_zeros() as i32;
    let base = (1u64 << lz) as f64;
    lz as f64 + (x as f64 / base - 1.0)
}

/// Estimated driver cost of each call kind, in microseconds.
///
/// The defaults were measured on an NVIDIA H200 (driver 580.159, CUDA 13.0) by
/// `bench/driver_costs.cpp` on 2026-11-21 (medians of 8-64 calls, device idle, each size's
/// allocations held until all were made, as in a growing allocator; raw figures in
/// `docs/gpu-runs/2026-11-21-driver-costs.jsonl`), for handle sizes 2 MiB to 4 GiB and `cudaMalloc`
/// sizes 2 MiB to 7 GiB, so that the multi-GiB segments of the traces are measured rather than
/// extrapolated. Mapping and the event calls are the means of gmlake's own GPU replays
/// (`docs/benchmarks.md`). Costs not measured are marked as assumptions.
#[derive(Clone, Debug, PartialEq)]
pub struct CostTable {
    /// `cuMemCreate` by handle size (10.6 us at 2 MiB, 7.9 at 32 MiB, 11.1 at 256 MiB, 33.5 at
    /// 1 GiB, 15,497 at 4 GiB).
    pub create_handle: SizeCurve,
    /// `cuMemRelease` by handle size (8.6 us at 2 MiB, 16.7 at 32 MiB, 75.1 at 256 MiB, 280 at
    /// 1 GiB, 1,077 at 4 GiB).
    pub release_handle: SizeCurve,
    /// `cuMemAddressReserve` of a 64 GiB arena (17-20 us measured by gmlake: 20; ranges up to
    /// 4 GiB cost 1-3 us).
    pub reserve_range: f64,
    /// `cuMemAddressFree`: not measured; assumed 10 us.
    pub free_range: f64,
    /// `cuMemMap` of one handle (1.1-1.3 us measured by gmlake: 1.2).
    pub map: f64,
    /// `cuMemSetAccess`, for each physical handle mapped in the range, by that handle's size
    /// (26.6 us at 2 MiB, 22.9 at 32 MiB, 37.3 at 256 MiB, 60.8 at 1 GiB, 207 at 4 GiB; where
    /// both were measured, the mean of one call over one handle and one call over 4-8 handles).
    pub set_access_per_handle: SizeCurve,
    /// `cuMemUnmap`, for each physical handle mapped in the range, by its size (14.6 us at
    /// 2 MiB, 14.8 at 32 MiB, 20.0 at 256 MiB, 29.0 at 1 GiB, 57.8 at 4 GiB).
    pub unmap_per_handle: SizeCurve,
    /// Event creation, destruction, record and query: 3, 3 (assumed), 4 and 3 us (measured by
    /// gmlake: 2.8-3.2, -, 2.6-5.2, 1.8-4.3).
    pub event: [f64; 4],
    /// Stream or device synchronization of an idle device: not measured; assumed 10 us.
    pub synchronize: f64,
    /// PyTorch's `cudaMalloc` by size, for the native baseline (48.3 us at 2 MiB, 68.7 at
    /// 192 MiB, 60.6 at 512 MiB, 98.9 at 1 GiB, 181 at 4 GiB, 278 at 7 GiB).
    pub native_malloc: SizeCurve,
    /// PyTorch's `cudaFree` by size (35.7 us at 2 MiB, 194 at 512 MiB, 371 at 1 GiB, 2,381 at
    /// 7 GiB).
    pub native_free: SizeCurve,
}

/// The handle sizes, in MiB, at which the virtual memory calls were measured.
const HANDLE_MIB: [u64; 5] = [2, 32, 256, 1024, 4096];

/// The sizes, in MiB, at which PyTorch's `cudaMalloc` and `cudaFree` were measured.
const MALLOC_MIB: [u64; 9] = [2, 20, 96, 192, 512, 1024, 2048, 4096, 7168];

impl Default for CostTable {
    fn default() -> Self {
        let handle = |us: [f64; 5]| SizeCurve::at_mib(&HANDLE_MIB, &us);
        let malloc = |us: [f64; 9]| SizeCurve::at_mib(&MALLOC_MIB, &us);
        CostTable {
            create_handle: handle([10.6, 7.9, 11.1, 33.5, 15_497.2]),
            release_handle: handle([8.6, 16.7, 75.1, 280.2, 1_077.3]),
            reserve_range: 20.0,
            free_range: 10.0,
            map: 1.2,
            set_access_per_handle: handle([26.6, 22.9, 37.3, 60.8, 206.7]),
            unmap_per_handle: handle([14.6, 14.8, 20.0, 29.0, 57.8]),
            event: [3.0, 3.0, 4.0, 3.0],
            synchronize: 10.0,
            native_malloc: malloc([48.3, 49.3, 47.0, 68.7, 60.6, 98.9, 147.1, 181.1, 278.1]),
            native_free: malloc([
                35.7, 51.9, 82.4, 134.4, 193.7, 371.3, 794.4, 1_225.3, 2_380.8,
            ]),
        }
    }
}
