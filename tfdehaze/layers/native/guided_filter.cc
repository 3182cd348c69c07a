// CPU kernels of tfdehaze's guided filter: the forward (Algorithm 1) and its exact backward (Algorithm 2 corrected,
// eq. 38 with fᵀ(g) = B(g / N)), the same math as `_forward_math` / `_backward_math` of
// tfdehaze/layers/guided_filter.py. Built and loaded by tfdehaze/layers/native/__init__.py; float32 in and out,
// double inside.
//
// Box sums: O(1) per pixel whatever the radius. Per output row, the column sums of the window rows are a running sum
// over rows (vectorised across the row: add the row entering the window, subtract the one leaving it), then the row
// sums a running sum along the row (several maps or segments of the row interleaved). The window is clipped to the
// image (r clipped to H - 1 and W - 1 per axis); N is the per-pixel count of window pixels inside the image.
//
// Fusion: the maps (I, I·I, x, I·x; dy·I / N, dy / N) are made from the input rows as they enter and leave the
// window, and each stage's per-pixel math runs on the window sums of the row it finishes. The two stages of each op
// run together row by row: the second (the box filter of a, b; of the backward's four maps) finds the rows it needs
// in a ring of the first's last 2r + 2 rows, so no full-size temporary is made.
//
// Accuracy: the guide is centred by the mean of a 16×16 grid of its pixels (the filter is invariant to it) and all
// sums, means and coefficients are double. A window whose variance is not above the round-off bound of these sums
// (`FlatBound`, about 1e-10·max|I - level|² at 2048²) counts as flat: a = 0 exactly and no gradient through cov, as
// `_coefficients` does for var <= 0 (a flat window then always gets a = 0, whatever eps).
//
// Work is split into (image, block of rows) units run on the op's CPU threadpool; a block starts its running sums
// from the rows of its first window (and its first stage from r rows above).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfdehaze {
namespace {

using int64 = std::int64_t;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// ------------------------------------------------------------------------------------------------------- geometry
struct Plan {
  int64 n, h, w, c, rh, rw, blocks;
  std::vector<double> inv_w;  // 1 / (window count along W) per column

  Plan(int64 n_, int64 h_, int64 w_, int64 c_, int64 r, int threads) : n(n_), h(h_), w(w_), c(c_) {
    rh = std::min(r, h - 1);
    rw = std::min(r, w - 1);
    inv_w.resize(w);
    for (int64 j = 0; j < w; ++j) inv_w[j] = 1.0 / double(std::min(j + rw, w - 1) - std::max(j - rw, int64{0}) + 1);
    // enough units for the threads; a block re-reads the 2rh+1 rows of its first window, so not too thin
    blocks = n >= threads ? 1 : (threads + n - 1) / n;
    blocks = std::max<int64>(1, std::min<int64>(blocks, h / std::max<int64>(32, rh)));
  }
  double inv_h(int64 i) const { return 1.0 / double(std::min(i + rh, h - 1) - std::max(i - rh, int64{0}) + 1); }
  int64 units() const { return n * blocks; }
  int64 row_begin(int64 b) const { return b * h / blocks; }
};

// The mean of a grid of at most 16×16 pixels of the plane: the guide's centring level (any constant would do).
double Level(const float* plane, int64 h, int64 w) {
  const int64 sh = std::max<int64>(h / 16, 1), sw = std::max<int64>(w / 16, 1);
  double sum = 0.0;
  int64 count = 0;
  for (int64 i = 0; i < h; i += sh)
    for (int64 j = 0; j < w; j += sw, ++count) sum += plane[i * w + j];
  return sum / double(count);
}

// p[0] + ... + p[n - 1], vectorised (8 partial sums)
inline double SumRange(const double* __restrict p, int64 n) {
  double t[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64 q = 0;
  for (; q + 8 <= n; q += 8)
    for (int k = 0; k < 8; ++k) t[k] += p[q + k];
  double s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; q < n; ++q) s += p[q];
  return s;
}

// Window sums along the row of K maps: out[k·ld + j] = P[k·ld + j + 1] + ... + P[k·ld + j + w2] (P zero-padded by
// rw + 1 before and rw after the row), as running sums. The K·S chains (S segments of the row, each starting from
// its first window summed directly) interleave, so that the adds' latency does not bound the loop. (ld and the
// segment length avoid multiples of 4 KiB, whose accesses would share L1 sets.)
template <int K, int S>
void RowSums(const double* P, int64 ld, double* out, int64 w, int64 w2) {
  const int64 len = S == 1 ? w : w / S - ((w / S) % 64 == 0);
  double acc[K][S];
  for (int s = 0; s < S; ++s)
    for (int k = 0; k < K; ++k)  // the first window of segment 0 starts with rw + 1 zeros
      acc[k][s] = s == 0 ? SumRange(P + k * ld + (w2 + 1) / 2, w2 / 2) : SumRange(P + k * ld + s * len, w2);
  for (int64 j = 0; j < len; ++j)
    for (int s = 0; s < S; ++s)
      for (int k = 0; k < K; ++k) {
        const int64 jj = s * len + j;
        const double* p = P + k * ld;
        acc[k][s] += p[jj + w2] - p[jj];
        out[k * ld + jj] = acc[k][s];
      }
  for (int64 jj = S * len; jj < w; ++jj)
    for (int k = 0; k < K; ++k) {
      const double* p = P + k * ld;
      acc[k][S - 1] += p[jj + w2] - p[jj];
      out[k * ld + jj] = acc[k][S - 1];
    }
}

// all m maps: four at a time, then two, then one (two or four segments where the row is long enough to amortise
// their first windows: at least four chains)
inline void AllRowSums(const double* P, int64 ld, double* out, int m, int64 w, int64 w2) {
  int k = 0;
  for (; k + 4 <= m; k += 4) RowSums<4, 1>(P + k * ld, ld, out + k * ld, w, w2);
  for (; k + 2 <= m; k += 2) {
    if (w >= 4 * w2)
      RowSums<2, 2>(P + k * ld, ld, out + k * ld, w, w2);
    else
      RowSums<2, 1>(P + k * ld, ld, out + k * ld, w, w2);
  }
  if (k < m) {
    if (w >= 8 * w2)
      RowSums<1, 4>(P + k * ld, ld, out + k * ld, w, w2);
    else
      RowSums<1, 1>(P + k * ld, ld, out + k * ld, w, w2);
  }
}

// A row length (doubles or floats) that is not a multiple of 4 KiB, so that rows read together use different L1 sets.
inline int64 Stride(int64 n) { return n % 512 == 0 ? n + 8 : n; }

// Box sums of m maps, one output row after another: the column sums of the window rows (double, zero-padded along
// the row) and their window sums along the row. An update(ka, wa, ks, ws, cols, ld) adds wa·(map q of row ka) -
// ws·(map q of row ks) to cols[q·ld + j]; a weight 0 goes with the other row's index (a row outside the image).
class Box {
 public:
  Box(const Plan& p, int m)
      : p_(p), m_(m), ld_(Stride(p.w + 2 * p.rw + 1)), buffer_(size_t(m) * size_t(2 * ld_), 0.0) {}

  // the column sums of row i's window, from scratch
  template <class Update>
  void Start(int64 i, Update&& update) {
    std::fill(buffer_.begin(), buffer_.begin() + m_ * ld_, 0.0);
    const int64 lo = std::max<int64>(i - p_.rh, 0), hi = std::min(i + p_.rh, p_.h - 1);
    for (int64 k = lo; k <= hi; k += 2) update(k, 1.0, k < hi ? k + 1 : k, k < hi ? -1.0 : 0.0, cols(), ld_);
  }

  // from row i - 1's window to row i's
  template <class Update>
  void Advance(int64 i, Update&& update) {
    const int64 ka = i + p_.rh, ks = i - p_.rh - 1;
    const bool add = ka < p_.h, sub = ks >= 0;
    if (add || sub) update(add ? ka : ks, add ? 1.0 : 0.0, sub ? ks : ka, sub ? 1.0 : 0.0, cols(), ld_);
  }

  // win[q·ld + j]: the window sum of map q at (i, j)
  const double* Sums() {
    double* win = buffer_.data() + m_ * ld_;
    AllRowSums(buffer_.data(), ld_, win, m_, p_.w, 2 * p_.rw + 1);
    return win;
  }
  int64 ld() const { return ld_; }

 private:
  double* cols() { return buffer_.data() + p_.rw + 1; }
  const Plan& p_;
  const int m_;
  const int64 ld_;
  std::vector<double> buffer_;
};

// The last 2rh + 2 rows of the planes one stage makes for the next (float; all rows when the image is shorter).
class Ring {
 public:
  Ring(const Plan& p, int planes)
      : w_(p.w % 1024 == 0 ? p.w + 16 : p.w),
        planes_(planes),
        rows_(std::min(2 * p.rh + 2, p.h)),
        data_(size_t(rows_ * planes) * w_) {}
  float* Row(int64 k, int64 q) { return data_.data() + ((k % rows_) * planes_ + q) * w_; }

 private:
  const int64 w_, planes_, rows_;
  std::vector<float> data_;
};

// Two box-filter stages on the rows [i0, i1) of one image: stage 1 makes the planes stage 2 filters (a, b in the
// forward) row by row into a `Ring`, running over [i0 - rh, i1 + rh) (the window rows of stage 2's rows) just ahead
// of stage 2. update1/2 as for `Box`; consume1/2(row, win, ld): win[q·ld + j] is the window sum of map q at (row, j).
template <class Update1, class Consume1, class Update2, class Consume2>
void TwoStages(const Plan& p, int m1, int m2, int64 i0, int64 i1, Update1&& update1, Consume1&& consume1,
               Update2&& update2, Consume2&& consume2) {
  Box first(p, m1), second(p, m2);
  const int64 k0 = std::max<int64>(i0 - p.rh, 0);
  int64 next = k0;  // stage 1's next row
  for (int64 i = i0; i < i1; ++i) {
    for (const int64 last = std::min(i + p.rh, p.h - 1); next <= last; ++next) {
      if (next == k0)
        first.Start(next, update1);
      else
        first.Advance(next, update1);
      consume1(next, first.Sums(), first.ld());
    }
    if (i == i0)
      second.Start(i, update2);
    else
      second.Advance(i, update2);
    consume2(i, second.Sums(), second.ld());
  }
}

// cols[q·ld + j] += wa·row_q(ka)[j] - ws·row_q(ks)[j] for the m planes of the ring
inline void UpdateFromRing(Ring& ring, int m, int64 w, int64 ka, double wa, int64 ks, double ws, double* cols,
                           int64 ld) {
  for (int q = 0; q < m; ++q) {
    const float* __restrict a = ring.Row(ka, q);
    const float* __restrict s = ring.Row(ks, q);
    double* __restrict col = cols + q * ld;
#pragma omp simd
    for (int64 j = 0; j < w; ++j) col[j] += wa * double(a[j]) - ws * double(s[j]);
  }
}

template <class Fn>
void ForUnits(OpKernelContext* ctx, const Plan& p, Fn&& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(p.units(), [&](int64 begin, int64 end) {
    for (int64 u = begin; u < end; ++u) {
      const int64 image = u / p.blocks, block = u % p.blocks;
      fn(image, p.row_begin(block), p.row_begin(block + 1));
    }
  });
}

int Threads(OpKernelContext* ctx) { return ctx->device()->tensorflow_cpu_worker_threads()->workers->NumThreads(); }

// Round-off bound of var = f(I·I) - f(I)² from the running double sums, for |I - level|² <= max2 (u = 2^-53): a
// column sum takes at most 4H updates, each rounding by at most u·(|sum| + 4·max2); a row sum at most 2W + w2
// roundings of u·|sum|; the window sum over N >= Nh·Nw / 4 pixels then errs by u·max2·(80H + 12W) at most, and
// var = f(I·I) - f(I)² by three times that.
double FlatBound(double max2, int64 h, int64 w) {
  return DBL_EPSILON * max2 * (160.0 * double(h) + 40.0 * double(w) + 64.0);
}

// ---------------------------------------------------------------------------------------------- per-row loops
// Free functions with scalar arguments (no captures), so that every loop vectorises; `stride` is x's channel count
// (a constant 1 or 3 once inlined), `ws` / `wa` the weights of `Box`'s update.

// max over the row of (I - level)²
inline double RowMax2(const float* __restrict g, double lv, int64 w) {
  double m2 = 0.0;
#pragma omp simd reduction(max : m2)
  for (int64 j = 0; j < w; ++j) {
    const double d = (double(g[j]) - lv) * (double(g[j]) - lv);
    m2 = std::max(m2, d);
  }
  return m2;
}

// [I, I·I] (centred)
inline void AddGuideMaps(const float* __restrict ga, double wa, const float* __restrict gs, double ws, double lv,
                         double* __restrict c0, double* __restrict c1, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double a = double(ga[j]) - lv, s = double(gs[j]) - lv;
    c0[j] += wa * a - ws * s;
    c1[j] += wa * a * a - ws * s * s;
  }
}

// [x, I·x] of one channel
inline void AddSignalMaps(const float* __restrict ga, const float* __restrict xa, double wa, const float* __restrict gs,
                          const float* __restrict xs, double ws, double lv, int64 stride, double* __restrict cx,
                          double* __restrict cgx, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double va = wa * double(xa[j * stride]), vs = ws * double(xs[j * stride]);
    cx[j] += va - vs;
    cgx[j] += va * (double(ga[j]) - lv) - vs * (double(gs[j]) - lv);
  }
}

// all four maps of a 1-channel x in one pass
inline void AddMaps1(const float* __restrict ga, const float* __restrict xa, double wa, const float* __restrict gs,
                     const float* __restrict xs, double ws, double lv, double* __restrict c0, double* __restrict c1,
                     double* __restrict c2, double* __restrict c3, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double a = double(ga[j]) - lv, s = double(gs[j]) - lv;
    const double va = wa * double(xa[j]), vs = ws * double(xs[j]);
    c0[j] += wa * a - ws * s;
    c1[j] += wa * a * a - ws * s * s;
    c2[j] += va - vs;
    c3[j] += va * a - vs * s;
  }
}

// f(I) and s = 1 / (var + eps) where var > tol, else 0
inline void GuideStats(const double* __restrict s0, const double* __restrict s1, double ih, const double* __restrict iw,
                       double tol, double eps, double* __restrict mean_i, double* __restrict s_row, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j];
    const double mi = s0[j] * inv_n;
    const double var = s1[j] * inv_n - mi * mi;
    mean_i[j] = mi;
    s_row[j] = var > tol ? 1.0 / (var + eps) : 0.0;
  }
}

inline void ToFloat(const double* __restrict in, float* __restrict out, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) out[j] = float(in[j]);
}

// a = cov·s, b = f(x) - a·f(I) of one channel [and a, f(x) for the backward]
template <bool kKeep>
inline void Coefficients(const double* __restrict sx, const double* __restrict sgx, double ih,
                         const double* __restrict iw, const double* __restrict mean_i, const double* __restrict s_row,
                         float* __restrict a_out, float* __restrict b_out, float* __restrict keep_a,
                         float* __restrict keep_x, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j];
    const double mx = sx[j] * inv_n;
    const double a = (sgx[j] * inv_n - mean_i[j] * mx) * s_row[j];
    a_out[j] = float(a);
    b_out[j] = float(mx - a * mean_i[j]);
    if (kKeep) {
      keep_a[j] = float(a);
      keep_x[j] = float(mx);
    }
  }
}

// y = f(a)·(I - level) + f(b) of one channel [and f(a)]
template <bool kKeep>
inline void Output(const double* __restrict sa, const double* __restrict sb, double ih, const double* __restrict iw,
                   const float* __restrict g, double lv, float* __restrict y, int64 stride, float* __restrict keep_fa,
                   int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j];
    const double fa = sa[j] * inv_n;
    y[j * stride] = float(fa * (double(g[j]) - lv) + sb[j] * inv_n);
    if (kKeep) keep_fa[j] = float(fa);
  }
}

// [dy·I / N, dy / N] of one channel
inline void AddAdjointMaps(const float* __restrict ga, const float* __restrict da, double fa,
                           const float* __restrict gs, const float* __restrict ds, double fs, double lv,
                           const double* __restrict iw, int64 stride, double* __restrict cg, double* __restrict c1,
                           int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double ua = fa * iw[j] * double(da[j * stride]), us = fs * iw[j] * double(ds[j * stride]);
    cg[j] += ua * (double(ga[j]) - lv) - us * (double(gs[j]) - lv);
    c1[j] += ua - us;
  }
}

// d_cov = (da - db·f(I))·s -> d_mean_x / N, d_cov / N of one channel [and the sums for d_var, d_mean_i]
template <bool kGuide>
inline void Adjoints(const double* __restrict sg, const double* __restrict s1, double ih, const double* __restrict iw,
                     const float* __restrict mean_i, const float* __restrict s_row, const float* __restrict a_row,
                     const float* __restrict mx_row, float* __restrict o_mx, float* __restrict o_cov,
                     double* __restrict d_var, double* __restrict d_mean_i, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j], mi = mean_i[j], db = s1[j];
    const double d_cov = (sg[j] - db * mi) * double(s_row[j]);
    o_mx[j] = float((db - d_cov * mi) * inv_n);
    o_cov[j] = float(d_cov * inv_n);
    if (kGuide) {
      const double a = a_row[j];
      d_var[j] -= d_cov * a;
      d_mean_i[j] -= db * a + d_cov * double(mx_row[j]);
    }
  }
}

// `Adjoints` and `GuideAdjoints` in one pass, for a 1-channel x
inline void Adjoints1(const double* __restrict sg, const double* __restrict s1, double ih, const double* __restrict iw,
                      const float* __restrict mean_i, const float* __restrict s_row, const float* __restrict a_row,
                      const float* __restrict mx_row, float* __restrict o_mx, float* __restrict o_cov,
                      float* __restrict o_mi, float* __restrict o_var, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j], mi = mean_i[j], db = s1[j], a = a_row[j];
    const double d_cov = (sg[j] - db * mi) * double(s_row[j]);
    const double d_var = -d_cov * a;
    o_mx[j] = float((db - d_cov * mi) * inv_n);
    o_cov[j] = float(d_cov * inv_n);
    o_mi[j] = float((-(db * a + d_cov * double(mx_row[j])) - 2.0 * mi * d_var) * inv_n);
    o_var[j] = float(d_var * inv_n);
  }
}

inline void GuideAdjoints(const double* __restrict d_var, const double* __restrict d_mean_i,
                          const float* __restrict mean_i, double ih, const double* __restrict iw,
                          float* __restrict o_mi, float* __restrict o_var, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double inv_n = ih * iw[j];
    o_mi[j] = float((d_mean_i[j] - 2.0 * double(mean_i[j]) * d_var[j]) * inv_n);
    o_var[j] = float(d_var[j] * inv_n);
  }
}

// dx = B(d_mean_x / N) + I·B(d_cov / N) of one channel [and its terms of dI: dy·f(a) + x·B(d_cov / N)]
template <bool kGuide>
inline void SignalGradient(const double* __restrict s_mx, const double* __restrict s_cov, const float* __restrict g,
                           double lv, const float* __restrict dy, const float* __restrict x,
                           const float* __restrict fa, int64 stride, float* __restrict dx, double* __restrict acc,
                           int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    dx[j * stride] = float(s_mx[j] + (double(g[j]) - lv) * s_cov[j]);
    if (kGuide) acc[j] += double(dy[j * stride]) * double(fa[j]) + double(x[j * stride]) * s_cov[j];
  }
}

// `SignalGradient` and `GuideGradient` in one pass, for a 1-channel x
inline void Gradients1(const double* __restrict s_mx, const double* __restrict s_cov, const double* __restrict s_mi,
                       const double* __restrict s_var, const float* __restrict g, double lv,
                       const float* __restrict dy, const float* __restrict x, const float* __restrict fa,
                       float* __restrict dx, float* __restrict dg, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) {
    const double gc = double(g[j]) - lv;
    dx[j] = float(s_mx[j] + gc * s_cov[j]);
    dg[j] = float(double(dy[j]) * double(fa[j]) + double(x[j]) * s_cov[j] + s_mi[j] + 2.0 * gc * s_var[j]);
  }
}

inline void GuideGradient(const double* __restrict acc, const double* __restrict s_mi, const double* __restrict s_var,
                          const float* __restrict g, double lv, float* __restrict dg, int64 w) {
#pragma omp simd
  for (int64 j = 0; j < w; ++j) dg[j] = float(acc[j] + s_mi[j] + 2.0 * (double(g[j]) - lv) * s_var[j]);
}

// ------------------------------------------------------------------------------------------------------- forward
// saved (N, K, H, W): keep 1: [f(I) (centred), s]; keep 2: also [a (C), f(x) (C), f(a) (C)]; s = 1 / (var + eps)
// where the window is not flat, else 0 (then a = cov·s = 0 and the backward's d_cov = 0).
template <int kC, int kKeep>
void Forward(OpKernelContext* ctx, const Plan& p, double eps, const float* guide, const float* x, float* y,
             float* saved, const std::vector<double>& level) {
  const int64 h = p.h, w = p.w, hw = h * w, c = kC > 0 ? kC : p.c;
  const int64 k_saved = kKeep == 0 ? 0 : kKeep == 1 ? 2 : 2 + 3 * c;
  const double* iw = p.inv_w.data();
  ForUnits(ctx, p, [&](int64 n, int64 i0, int64 i1) {
    const float* gi = guide + n * hw;
    const float* xi = x + n * hw * c;
    float* yi = y + n * hw * c;
    float* si = saved + n * k_saved * hw;
    const double lv = level[n];
    double max2 = 0.0;
    std::vector<double> stats(2 * w);  // f(I), s of the row
    Ring ab(p, int(2 * c));
    // stage 1: window means of I, I·I, x, I·x -> a, b [and what the backward needs]
    auto update1 = [&](int64 ka, double wa, int64 ks, double ws, double* cols, int64 ld) {
      const float* ga = gi + ka * w;
      const float* gs = gi + ks * w;
      if (wa != 0.0) max2 = std::max(max2, RowMax2(ga, lv, w));
      if (ws < 0.0) max2 = std::max(max2, RowMax2(gs, lv, w));  // a row added by `Box::Start`
      if (c == 1) {
        AddMaps1(ga, xi + ka * w, wa, gs, xi + ks * w, ws, lv, cols, cols + ld, cols + 2 * ld, cols + 3 * ld, w);
        return;
      }
      AddGuideMaps(ga, wa, gs, ws, lv, cols, cols + ld, w);
      for (int64 q = 0; q < c; ++q)
        AddSignalMaps(ga, xi + ka * w * c + q, wa, gs, xi + ks * w * c + q, ws, lv, c, cols + (2 + q) * ld,
                      cols + (2 + c + q) * ld, w);
    };
    auto consume1 = [&](int64 k, const double* win, int64 lw) {
      const double ih = p.inv_h(k);
      const int64 row = k * w;
      const bool own = kKeep && k >= i0 && k < i1;  // a halo row of another unit: only into the ring
      GuideStats(win, win + lw, ih, iw, FlatBound(max2, h, w), eps, stats.data(), stats.data() + w, w);
      if (own) {
        ToFloat(stats.data(), si + row, w);
        ToFloat(stats.data() + w, si + hw + row, w);
      }
      for (int64 q = 0; q < c; ++q) {
        if (kKeep == 2 && own)
          Coefficients<true>(win + (2 + q) * lw, win + (2 + c + q) * lw, ih, iw, stats.data(), stats.data() + w,
                             ab.Row(k, q), ab.Row(k, c + q), si + (2 + q) * hw + row, si + (2 + c + q) * hw + row, w);
        else
          Coefficients<false>(win + (2 + q) * lw, win + (2 + c + q) * lw, ih, iw, stats.data(), stats.data() + w,
                              ab.Row(k, q), ab.Row(k, c + q), nullptr, nullptr, w);
      }
    };
    // stage 2: y = f(a)·(I - level) + f(b) [and f(a)]
    auto update2 = [&](int64 ka, double wa, int64 ks, double ws, double* cols, int64 ld) {
      UpdateFromRing(ab, int(2 * c), w, ka, wa, ks, ws, cols, ld);
    };
    auto consume2 = [&](int64 i, const double* win, int64 lw) {
      const int64 row = i * w;
      for (int64 q = 0; q < c; ++q)
        Output<kKeep == 2>(win + q * lw, win + (c + q) * lw, p.inv_h(i), iw, gi + row, lv, yi + row * c + q, c,
                           si + (2 + 2 * c + q) * hw + row, w);
    };
    TwoStages(p, int(2 + 2 * c), int(2 * c), i0, i1, update1, consume1, update2, consume2);
  });
}

// ------------------------------------------------------------------------------------------------------ backward
// Eq. (38) with fᵀ(u) = B(u / N): da = B(dy·I / N), db = B(dy / N); d_cov = (da - db·f(I))·s, d_mean_x = db -
// d_cov·f(I); dx = B(d_mean_x / N) + I·B(d_cov / N). The guide: d_var = -Σ d_cov·a, d_mean_i = -Σ (db·a +
// d_cov·f(x)) - 2 f(I)·d_var; dI = Σ (dy·f(a) + x·B(d_cov / N)) + B(d_mean_i / N) + 2 I·B(d_var / N).
template <int kC, bool kGuide>
void Backward(OpKernelContext* ctx, const Plan& p, const float* dy, const float* guide, const float* x,
              const float* saved, int64 k_saved, float* d_guide, float* dx, const std::vector<double>& level) {
  const int64 h = p.h, w = p.w, hw = h * w, c = kC > 0 ? kC : p.c;
  const int64 m2 = 2 * c + (kGuide ? 2 : 0);
  const double* iw = p.inv_w.data();
  ForUnits(ctx, p, [&](int64 n, int64 i0, int64 i1) {
    const float* gi = guide + n * hw;
    const float* dyi = dy + n * hw * c;
    const float* xi = x + n * hw * c;
    const float* si = saved + n * k_saved * hw;
    float* dxi = dx + n * hw * c;
    float* dgi = kGuide ? d_guide + n * hw : nullptr;
    const double lv = level[n];
    std::vector<double> acc(2 * w);  // d_var, d_mean_i of the row; then dI's sum over channels
    Ring maps(p, int(m2));
    // stage 1: fᵀ(dy·I), fᵀ(dy) -> the maps d_mean_x / N, d_cov / N [, d_mean_i / N, d_var / N]
    auto update1 = [&](int64 ka, double wa, int64 ks, double ws, double* cols, int64 ld) {
      for (int64 q = 0; q < c; ++q)
        AddAdjointMaps(gi + ka * w, dyi + ka * w * c + q, wa * p.inv_h(ka), gi + ks * w, dyi + ks * w * c + q,
                       ws * p.inv_h(ks), lv, iw, c, cols + q * ld, cols + (c + q) * ld, w);
    };
    auto consume1 = [&](int64 k, const double* win, int64 lw) {
      const double ih = p.inv_h(k);
      const int64 row = k * w;
      if (kGuide && c == 1) {
        Adjoints1(win, win + lw, ih, iw, si + row, si + hw + row, si + 2 * hw + row, si + 3 * hw + row, maps.Row(k, 0),
                  maps.Row(k, 1), maps.Row(k, 2), maps.Row(k, 3), w);
        return;
      }
      if (kGuide) std::fill(acc.begin(), acc.end(), 0.0);
      for (int64 q = 0; q < c; ++q)
        Adjoints<kGuide>(win + q * lw, win + (c + q) * lw, ih, iw, si + row, si + hw + row,
                         kGuide ? si + (2 + q) * hw + row : nullptr, kGuide ? si + (2 + c + q) * hw + row : nullptr,
                         maps.Row(k, q), maps.Row(k, c + q), acc.data(), acc.data() + w, w);
      if (kGuide)
        GuideAdjoints(acc.data(), acc.data() + w, si + row, ih, iw, maps.Row(k, 2 * c), maps.Row(k, 2 * c + 1), w);
    };
    // stage 2: dx = B(d_mean_x / N) + I·B(d_cov / N) [and dI]
    auto update2 = [&](int64 ka, double wa, int64 ks, double ws, double* cols, int64 ld) {
      UpdateFromRing(maps, int(m2), w, ka, wa, ks, ws, cols, ld);
    };
    auto consume2 = [&](int64 i, const double* win, int64 lw) {
      const int64 row = i * w;
      if (kGuide && c == 1) {
        Gradients1(win, win + lw, win + 2 * lw, win + 3 * lw, gi + row, lv, dyi + row, xi + row, si + 4 * hw + row,
                   dxi + row, dgi + row, w);
        return;
      }
      if (kGuide) std::fill(acc.begin(), acc.begin() + w, 0.0);
      for (int64 q = 0; q < c; ++q)
        SignalGradient<kGuide>(win + q * lw, win + (c + q) * lw, gi + row, lv, dyi + row * c + q, xi + row * c + q,
                               kGuide ? si + (2 + 2 * c + q) * hw + row : nullptr, c, dxi + row * c + q, acc.data(),
                               w);
      if (kGuide) GuideGradient(acc.data(), win + 2 * c * lw, win + (2 * c + 1) * lw, gi + row, lv, dgi + row, w);
    };
    TwoStages(p, int(2 * c), int(m2), i0, i1, update1, consume1, update2, consume2);
  });
}

// ------------------------------------------------------------------------------------------------------------ ops
absl::Status CheckPair(const Tensor& guide, const Tensor& x) {
  if (guide.dims() != 4 || x.dims() != 4 || guide.dim_size(3) != 1)
    return absl::InvalidArgumentError("guide must be (N, H, W, 1) and x (N, H, W, C)");
  for (int a = 0; a < 3; ++a)
    if (guide.dim_size(a) != x.dim_size(a))
      return absl::InvalidArgumentError("guide and x must have the same batch size, height and width");
  return absl::OkStatus();
}

std::vector<double> Levels(const float* guide, int64 n, int64 h, int64 w) {
  std::vector<double> level(n);
  for (int64 i = 0; i < n; ++i) level[i] = Level(guide + i * h * w, h, w);
  return level;
}

// fn(std::integral_constant<int, C>()) with C = c for the channel counts compiled for (1, 3), else C = 0 (any c)
template <typename Fn>
void WithChannels(int64 c, Fn&& fn) {
  if (c == 1)
    fn(std::integral_constant<int, 1>());
  else if (c == 3)
    fn(std::integral_constant<int, 3>());
  else
    fn(std::integral_constant<int, 0>());
}

class GuidedFilterOp : public OpKernel {
 public:
  explicit GuidedFilterOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("radius", &radius_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("eps", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("keep", &keep_));
    OP_REQUIRES(ctx, keep_ >= 0 && keep_ <= 2, absl::InvalidArgumentError("keep must be 0, 1 or 2"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& guide = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckPair(guide, x));
    const int64 n = x.dim_size(0), h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    const int64 k_saved = keep_ == 0 ? 0 : keep_ == 1 ? 2 : 2 + 3 * c;
    Tensor* y = nullptr;
    Tensor* saved = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n, k_saved, h, w}), &saved));
    if (x.NumElements() == 0) {
      saved->flat<float>().setZero();  // (N, 2, H, W) when C = 0
      return;
    }
    const Plan p(n, h, w, c, radius_, Threads(ctx));
    const float* g = guide.flat<float>().data();
    const auto level = Levels(g, n, h, w);
    const float* xs = x.flat<float>().data();
    float* ys = y->flat<float>().data();
    float* ss = saved->flat<float>().data();
    auto run = [&](auto channels, auto keep) {
      Forward<decltype(channels)::value, decltype(keep)::value>(ctx, p, eps_, g, xs, ys, ss, level);
    };
    auto with_keep = [&](auto channels) {
      if (keep_ == 0)
        run(channels, std::integral_constant<int, 0>());
      else if (keep_ == 1)
        run(channels, std::integral_constant<int, 1>());
      else
        run(channels, std::integral_constant<int, 2>());
    };
    WithChannels(c, with_keep);
  }

 private:
  int64 radius_ = 0;
  float eps_ = 0.0f;
  int64 keep_ = 0;
};

class GuidedFilterGradOp : public OpKernel {
 public:
  explicit GuidedFilterGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("radius", &radius_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("with_guide", &with_guide_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& guide = ctx->input(1);
    const Tensor& x = ctx->input(2);
    const Tensor& saved = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckPair(guide, x));
    OP_REQUIRES(ctx, dy.shape() == x.shape(), absl::InvalidArgumentError("dy must have x's shape"));
    const int64 n = x.dim_size(0), h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    const int64 k_needed = with_guide_ ? 2 + 3 * c : 2;
    OP_REQUIRES(ctx, saved.dims() == 4 && saved.dim_size(0) == n && saved.dim_size(2) == h &&
                         saved.dim_size(3) == w && (saved.dim_size(1) == 2 || saved.dim_size(1) == 2 + 3 * c) &&
                         saved.dim_size(1) >= k_needed,
                absl::InvalidArgumentError("saved does not come from the forward op with the keep this needs"));
    Tensor* d_guide = nullptr;
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, with_guide_ ? guide.shape() : TensorShape({0}), &d_guide));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &dx));
    if (x.NumElements() == 0) {
      if (with_guide_) d_guide->flat<float>().setZero();
      return;
    }
    const Plan p(n, h, w, c, radius_, Threads(ctx));
    const float* g = guide.flat<float>().data();
    const auto level = Levels(g, n, h, w);
    float* dg = with_guide_ ? d_guide->flat<float>().data() : nullptr;
    auto run = [&](auto channels, auto guide_too) {
      Backward<decltype(channels)::value, decltype(guide_too)::value>(
          ctx, p, dy.flat<float>().data(), g, x.flat<float>().data(), saved.flat<float>().data(), saved.dim_size(1),
          dg, dx->flat<float>().data(), level);
    };
    auto with_guide = [&](auto channels) {
      if (with_guide_)
        run(channels, std::true_type());
      else
        run(channels, std::false_type());
    };
    WithChannels(c, with_guide);
  }

 private:
  int64 radius_ = 0;
  bool with_guide_ = false;
};

}  // namespace

REGISTER_OP("TfdehazeGuidedFilter")
    .Input("guide: float")
    .Input("x: float")
    .Output("y: float")
    .Output("saved: float")
    .Attr("radius: int >= 0")
    .Attr("eps: float")
    .Attr("keep: int = 0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle guide, x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &guide));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &x));
      int64 keep;
      TF_RETURN_IF_ERROR(c->GetAttr("keep", &keep));
      DimensionHandle k = c->MakeDim(keep == 0 ? 0 : 2);
      if (keep == 2)
        k = c->ValueKnown(c->Dim(x, 3)) ? c->MakeDim(2 + 3 * c->Value(c->Dim(x, 3))) : c->UnknownDim();
      c->set_output(0, x);
      c->set_output(1, c->MakeShape({c->Dim(x, 0), k, c->Dim(x, 1), c->Dim(x, 2)}));
      return absl::OkStatus();
    })
    .Doc("tfdehaze's guided filter (float32, CPU): y and the window statistics the backward needs (keep 0: none, "
         "1: for x's gradient, 2: for x's and the guide's).");

REGISTER_OP("TfdehazeGuidedFilterGrad")
    .Input("dy: float")
    .Input("guide: float")
    .Input("x: float")
    .Input("saved: float")
    .Output("d_guide: float")
    .Output("dx: float")
    .Attr("radius: int >= 0")
    .Attr("with_guide: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &unused));
      bool with_guide;
      TF_RETURN_IF_ERROR(c->GetAttr("with_guide", &with_guide));
      c->set_output(0, with_guide ? c->input(1) : c->MakeShape({0}));
      c->set_output(1, c->input(2));
      return absl::OkStatus();
    })
    .Doc("Exact gradient of TfdehazeGuidedFilter for x (and the guide with with_guide) from its saved statistics.");

REGISTER_KERNEL_BUILDER(Name("TfdehazeGuidedFilter").Device(tensorflow::DEVICE_CPU), GuidedFilterOp);
REGISTER_KERNEL_BUILDER(Name("TfdehazeGuidedFilterGrad").Device(tensorflow::DEVICE_CPU), GuidedFilterGradOp);

}  // namespace tfdehaze
