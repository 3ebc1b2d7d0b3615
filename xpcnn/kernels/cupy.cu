// CuPy's fast paths (xpcnn/kernels/cupy.py): templates that the module compiles once with
// NVRTC on first use, for float and double (T), a window's tap index W (unsigned char or
// int), a label L (int or long long) and the product's tile (ROWS, COLS); cupy.py lists the
// instances and sets BLOCK (and the product's DEPTH and PRODUCT_THREADS).
//
// Each kernel runs BLOCK threads a block over a grid-strided range, so any grid covers
// any array. Element-wise kernels do the standard path's operations in its order: compiled
// with --fmad=false (no fused multiply-add) each rounds where CuPy's one-operation kernels
// round, bit for bit. Sums over a channel run in double across many blocks a channel: each
// block stores its partial sums, and the last block to finish (a counter per channel,
// which that block resets) adds them in block order, the same order on every run, and
// writes what the layer needs next; such kernels take the partials and the counters as
// their last two parameters. Only these sums differ from the standard path (another order,
// in double).
#define GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * BLOCK + threadIdx.x; i < (n); i += (long long)gridDim.x * BLOCK)

static_assert((BLOCK & (BLOCK - 1)) == 0, "block_sum2 halves BLOCK down to one thread: a power of two");

// The sums over the block's threads of (a, b), in a fixed tree order; in every thread.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[BLOCK], sb[BLOCK];
  unsigned t = threadIdx.x;
  sa[t] = a;
  sb[t] = b;
  __syncthreads();
  for (unsigned s = BLOCK / 2; s > 0; s >>= 1) {
    if (t < s) {
      sa[t] += sa[t + s];
      sb[t] += sb[t + s];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
  __syncthreads();  // before the arrays are written again
}

// Stores the block's sums as partial blockIdx.x of channel blockIdx.y; true in the last
// of the channel's gridDim.x blocks to do so, which then sees every partial (each block's
// store is fenced before it takes its ticket, and the last block fences after taking its
// own, which the PTX memory model asks of a reader). That block resets the channel's counter.
__device__ bool last_of_channel(double a, double b, double* partials, unsigned* counters) {
  __shared__ bool last;
  if (threadIdx.x == 0) {
    size_t slot = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
    partials[2 * slot] = a;
    partials[2 * slot + 1] = b;
    __threadfence();
    unsigned ticket = atomicAdd(&counters[blockIdx.y], 1u);
    last = ticket == gridDim.x - 1;
    if (last) {
      counters[blockIdx.y] = 0;
      __threadfence();
    }
  }
  __syncthreads();
  return last;
}

// The channel's partial sums added in block order (the same on every run).
__device__ void channel_total(const double* partials, double& a, double& b) {
  const volatile double* p = partials + 2 * (size_t)blockIdx.y * gridDim.x;
  a = 0;
  b = 0;
  for (unsigned i = 0; i < gridDim.x; ++i) {
    a += p[2 * i];
    b += p[2 * i + 1];
  }
}

// ReLU as CuPy's maximum(v, 0) computes it: NaN stays NaN.
template <typename T>
__device__ T relu_of(T v) {
  return isnan(v) ? v : max(v, (T)0);
}

// Batch norm's statistics of channel rows x (C rows of `count`): the mean, the biased
// variance, 1 / sqrt(var + eps) and scale = gamma / sqrt(var + eps), each (C). The sums
// are shifted by the row's first value, which keeps them accurate when |mean| >> std.
template <typename T>
__global__ void statistics(const T* x, long long count, const T* gamma, double eps, T* mean, T* var, T* inv_std,
                           T* scale, double* partials, unsigned* counters) {
  const T* row = x + (long long)blockIdx.y * count;
  double shift = (double)row[0], sum = 0, squares = 0;
  GRID_STRIDE(i, count) {
    double d = (double)row[i] - shift;
    sum += d;
    squares += d * d;
  }
  block_sum2(sum, squares);
  if (!last_of_channel(sum, squares, partials, counters) || threadIdx.x != 0) return;
  channel_total(partials, sum, squares);
  unsigned c = blockIdx.y;
  double m = sum / count, v = squares / count - m * m;
  T variance = (T)(v < 0 ? 0 : v);  // rounding can leave a tiny negative; NaN stays NaN
  T inverse = (T)1 / sqrt(variance + (T)eps);
  mean[c] = (T)(shift + m);
  var[c] = variance;
  inv_std[c] = inverse;
  scale[c] = gamma[c] * inverse;
}

// y = (x - mean) * scale + shift per channel row, or x * scale + shift where `centred`
// is 0 (inference's running statistics); cut by ReLU where `relu` is set.
template <typename T>
__global__ void scale_rows(const T* x, long long count, long long total, const T* mean, const T* scale,
                           const T* shift, int centred, int relu, T* y) {
  GRID_STRIDE(i, total) {
    long long c = i / count;
    T v = centred ? x[i] - mean[c] : x[i];
    v = v * scale[c] + shift[c];
    y[i] = relu ? relu_of(v) : v;
  }
}

// From the sums of the gradient g and g * (x - mean) over a channel: the gradients of
// gamma and beta and what dx = (g - dy_mean) * a + (x - mean) * b takes, as
// norm.normalise_gradient computes them: terms (5, C) = grad gamma, grad beta, dy_mean, a, b.
template <typename T>
__device__ void gradient_terms(double total, double along, long long count, const T* inv_std, const T* gamma,
                               T* terms) {
  unsigned c = blockIdx.y, channels = gridDim.y;
  T s = inv_std[c], grad_bias = (T)total, grad_weight = (T)along * s, a = gamma[c] * s;
  terms[c] = grad_weight;
  terms[channels + c] = grad_bias;
  terms[2 * channels + c] = grad_bias / (T)count;
  terms[3 * channels + c] = a;
  terms[4 * channels + c] = -a * s * grad_weight / (T)count;
}

// dy times ReLU's mask (y > 0) where `cut` is set: dy - dy elsewhere, which is 0, or NaN
// for a NaN or infinite dy, as dy * 0 is.
template <typename T>
__device__ T cut_by(T g, const T* y, long long i, int cut) {
  return (cut && !(y[i] > 0)) ? g - g : g;
}

// The sums of g and g * (x - mean) per channel row (g = dy, or dy cut by ReLU's output
// y), then gradient_terms in the channel's last block.
template <typename T>
__global__ void gradient_sums(const T* dy, const T* y, int cut, const T* x, long long count, const T* mean,
                              const T* inv_std, const T* gamma, T* terms, double* partials, unsigned* counters) {
  long long start = (long long)blockIdx.y * count;
  T m = mean[blockIdx.y];
  double total = 0, along = 0;
  GRID_STRIDE(i, count) {
    double g = (double)cut_by(dy[start + i], y, start + i, cut);
    total += g;
    along += g * (double)(x[start + i] - m);
  }
  block_sum2(total, along);
  if (!last_of_channel(total, along, partials, counters) || threadIdx.x != 0) return;
  channel_total(partials, total, along);
  gradient_terms(total, along, count, inv_std, gamma, terms);
}

// dx = (g - dy_mean) * a + (x - mean) * b per channel row, from gradient_sums' terms.
template <typename T>
__global__ void input_gradient(const T* dy, const T* y, int cut, const T* x, long long count, long long total,
                               const T* mean, const T* terms, long long channels, T* dx) {
  GRID_STRIDE(i, total) {
    long long c = i / count;
    T g = cut_by(dy[i], y, i, cut);
    dx[i] = (g - terms[2 * channels + c]) * terms[3 * channels + c] + (x[i] - mean[c]) * terms[4 * channels + c];
  }
}

// running = running * (1 - momentum) + momentum * batch, the variance made unbiased by
// `ratio` (count / (count - 1)), as norm.update_running computes it.
template <typename T>
__global__ void running_update(T* running_mean, T* running_var, const T* mean, const T* var, long long channels,
                               double keep, double momentum, double ratio) {
  GRID_STRIDE(c, channels) {
    running_mean[c] = running_mean[c] * (T)keep + (T)momentum * mean[c];
    running_var[c] = running_var[c] * (T)keep + (T)momentum * var[c] * (T)ratio;
  }
}

// The shape of a pooling: x4 (C, h, w, n), windows kh x kw with strides sh, sw, y4 (C, ho, wo, n).
// Kernels take it as these parameters (CuPy passes scalars, not structures) and make one.
struct Pooling {
  long long h, w, n, ho, wo;
  int kh, kw, sh, sw;
};
#define POOLING long long h, long long w, long long n, long long ho, long long wo, int kh, int kw, int sh, int sw
#define MAKE_POOLING Pooling p = {h, w, n, ho, wo, kh, kw, sh, sw}

// Where tap t of the window of output o (c, oh, ow, k) lies in x4.
__device__ long long tap_at(const Pooling& p, long long o, int t) {
  long long k = o % p.n, r = o / p.n, ow = r % p.wo;
  r /= p.wo;
  long long oh = r % p.ho, c = r / p.ho;
  long long hh = oh * p.sh + t / p.kw, ww = ow * p.sw + t % p.kw;
  return ((c * p.h + hh) * p.w + ww) * p.n + k;
}

// y4 = the max over each window of v = x4, or of v = (x4 - mean) * scale + shift per
// channel where `affine` is set (without the mean where `centred` is 0), then cut by
// ReLU where `relu` is set; where = the index of the window's first maximum in row-major
// order, a NaN counting as the maximum (the first NaN), or kh * kw where ReLU passes no
// gradient (a maximum <= 0, or NaN, which y4 keeps). `where` is written if `keep`.
template <typename T, typename W>
__global__ void pool(const T* x4, POOLING, const T* mean, const T* scale, const T* shift, int affine,
                     int centred, int relu, long long total, T* y4, W* where, int keep) {
  MAKE_POOLING;
  int taps = p.kh * p.kw;
  GRID_STRIDE(o, total) {
    long long c = o / (p.ho * p.wo * p.n);
    T best = 0;
    int at = 0;
    for (int t = 0; t < taps; ++t) {
      T v = x4[tap_at(p, o, t)];
      if (affine) v = (centred ? v - mean[c] : v) * scale[c] + shift[c];
      if (t == 0 || v > best || (isnan(v) && !isnan(best))) {
        best = v;
        at = t;
      }
    }
    if (relu && !(best > 0)) {
      at = taps;
      best = relu_of(best);
    }
    y4[o] = best;
    if (keep) where[o] = (W)at;
  }
}

// dx4 from dy4: each window's gradient to the tap `where` names, added over the windows
// that hold a value (in window order), 0 for a value in none.
template <typename T, typename W>
__global__ void pool_gradient(const T* dy4, const W* where, POOLING, long long total, T* dx4) {
  MAKE_POOLING;
  GRID_STRIDE(i, total) {
    long long k = i % p.n, r = i / p.n, ww = r % p.w;
    r /= p.w;
    long long hh = r % p.h, c = r / p.h;
    long long oh0 = hh < p.kh ? 0 : (hh - p.kh) / p.sh + 1, ow0 = ww < p.kw ? 0 : (ww - p.kw) / p.sw + 1;
    T sum = 0;
    for (long long oh = oh0; oh <= hh / p.sh && oh < p.ho; ++oh) {
      for (long long ow = ow0; ow <= ww / p.sw && ow < p.wo; ++ow) {
        long long o = ((c * p.ho + oh) * p.wo + ow) * p.n + k;
        if (where[o] == (W)((hh - oh * p.sh) * p.kw + (ww - ow * p.sw))) sum += dy4[o];
      }
    }
    dx4[i] = sum;
  }
}

// The routed gradient g at tap t of output o's window: dy4 at the first maximum, 0 at the
// other taps; a window ReLU cut adds dy4 * 0 once (at tap 0), as the layers' mask does: a
// NaN or inf there makes its channel's sums NaN, as it would unfused.
template <typename T, typename W>
__device__ double routed(const T* dy4, const W* where, long long o, int t, int taps) {
  int at = (int)where[o];
  if (at == t) return (double)dy4[o];
  return (at == taps && t == 0) ? (double)dy4[o] * 0.0 : 0.0;
}

// gradient_sums of the routed gradient, read window by window, tap by tap (windows that
// tile x4: each value once), then gradient_terms in the channel's last block.
template <typename T, typename W>
__global__ void pooled_gradient_sums(const T* dy4, const W* where, const T* x4, POOLING, const T* mean,
                                     const T* inv_std, const T* gamma, long long count, T* terms,
                                     double* partials, unsigned* counters) {
  MAKE_POOLING;
  int taps = p.kh * p.kw;
  long long per_channel = p.ho * p.wo * p.n, first = (long long)blockIdx.y * per_channel;
  T m = mean[blockIdx.y];
  double total = 0, along = 0;
  GRID_STRIDE(e, per_channel * taps) {
    long long k = e % p.n, rest = e / p.n, o = first + (rest / taps) * p.n + k;
    int t = (int)(rest % taps);
    double g = routed(dy4, where, o, t, taps);
    total += g;
    along += g * (double)(x4[tap_at(p, o, t)] - m);
  }
  block_sum2(total, along);
  if (!last_of_channel(total, along, partials, counters) || threadIdx.x != 0) return;
  channel_total(partials, total, along);
  gradient_terms(total, along, count, inv_std, gamma, terms);
}

// input_gradient of the routed gradient, written window by window (they tile dx4).
template <typename T, typename W>
__global__ void pooled_input_gradient(const T* dy4, const W* where, const T* x4, POOLING, const T* mean,
                                      const T* terms, long long channels, T* dx4) {
  MAKE_POOLING;
  int taps = p.kh * p.kw;
  long long outputs = channels * p.ho * p.wo * p.n;
  GRID_STRIDE(e, outputs * taps) {
    long long k = e % p.n, rest = e / p.n, o = (rest / taps) * p.n + k;
    int t = (int)(rest % taps);
    long long c = o / (p.ho * p.wo * p.n), i = tap_at(p, o, t);
    T g = terms[2 * channels + c];
    T d = (int)where[o] == t ? dy4[o] - g : -g;  // -g: 0 - g, as the standard's zeros give it
    dx4[i] = d * terms[3 * channels + c] + (x4[i] - mean[c]) * terms[4 * channels + c];
  }
}

// The geometry of a convolution's windows: x (N, C, H, W) by element strides, windows
// kh x kw with strides sh, sw and padding top, left, giving ho x wo outputs.
struct Windows {
  long long n, c, h, w, ho, wo;
  long long sn, sc, sh_, sw_;
  int kh, kw, sh, sw, top, left;
};
#define WINDOWS long long n, long long c, long long h, long long w, long long ho, long long wo, long long sn, \
  long long sc, long long sh_, long long sw_, int kh, int kw, int sh, int sw, int top, int left
#define MAKE_WINDOWS Windows g = {n, c, h, w, ho, wo, sn, sc, sh_, sw_, kh, kw, sh, sw, top, left}

// buffer (C, kh, kw, ho, wo, N) = x's value under each tap of each window, 0 in the padding.
template <typename T>
__global__ void im2col(const T* x, WINDOWS, long long total, T* buffer) {
  MAKE_WINDOWS;
  GRID_STRIDE(i, total) {
    long long k = i % g.n, r = i / g.n, ow = r % g.wo;
    r /= g.wo;
    long long oh = r % g.ho;
    r /= g.ho;
    long long j = r % g.kw;
    r /= g.kw;
    long long tap_row = r % g.kh, c = r / g.kh;
    long long hh = oh * g.sh + tap_row - g.top, ww = ow * g.sw + j - g.left;
    bool inside = hh >= 0 && hh < g.h && ww >= 0 && ww < g.w;
    buffer[i] = inside ? x[k * g.sn + c * g.sc + hh * g.sh_ + ww * g.sw_] : (T)0;
  }
}

// dx4 (C, H, W, N) += the columns cols6 (C, kh, kw, ho, wo, N) that im2col read from
// each value, added tap by tap in (i, j) order as windows.fold adds them.
template <typename T>
__global__ void fold(const T* cols6, WINDOWS, long long total, T* dx4) {
  MAKE_WINDOWS;
  GRID_STRIDE(e, total) {
    long long k = e % g.n, r = e / g.n, ww = r % g.w;
    r /= g.w;
    long long hh = r % g.h, c = r / g.h;
    T sum = dx4[e];
    for (int i = 0; i < g.kh; ++i) {
      long long rows = hh + g.top - i;
      if (rows < 0 || rows % g.sh != 0 || rows / g.sh >= g.ho) continue;
      for (int j = 0; j < g.kw; ++j) {
        long long cols = ww + g.left - j;
        if (cols < 0 || cols % g.sw != 0 || cols / g.sw >= g.wo) continue;
        sum += cols6[((((c * g.kh + i) * g.kw + j) * g.ho + rows / g.sh) * g.wo + cols / g.sw) * g.n + k];
      }
    }
    dx4[e] = sum;
  }
}

// One Adam step of param and its moments m, v (`size` values each, in C order), in the
// operations and order of optim.adam_update; grad is read by its element strides g0..g3 as
// a 4-d array of sizes (size / (d1 d2 d3), d1, d2, d3) (a convolution's is not in C order).
// The coefficients are read from device memory (a recorded step replays with new ones).
// decay: 0 none, 1 L2, 2 decoupled.
template <typename T>
__global__ void adam(T* param, const T* grad, T* m, T* v, long long size, long long d1, long long d2, long long d3,
                     long long g0, long long g1, long long g2, long long g3, const T* beta1, const T* rest1,
                     const T* beta2, const T* rest2, const T* correction2, const T* step_size, const T* eps,
                     const T* rate, const T* shrink, int decay) {
  GRID_STRIDE(i, size) {
    long long at = (i % d3) * g3 + (i / d3 % d2) * g2 + (i / (d2 * d3) % d1) * g1 + i / (d1 * d2 * d3) * g0;
    T p = param[i], g = grad[at];
    if (decay == 2) p = p * *shrink;
    if (decay == 1) g = g + *rate * p;
    T mi = m[i] * *beta1 + *rest1 * g;
    T vi = v[i] * *beta2 + *rest2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    param[i] = p - mi / (sqrt(vi) / *correction2 + *eps) * *step_size;
  }
}

// y = relu(x) and, where `keep`, mask = 1 where y > 0, else 0 (activation.relu).
template <typename T>
__global__ void relu(const T* x, long long size, T* y, T* mask, int keep) {
  GRID_STRIDE(i, size) {
    T v = relu_of(x[i]);
    y[i] = v;
    if (keep) mask[i] = v > 0 ? (T)1 : (T)0;
  }
}

// scaled = mask / keep and y = x * scaled, for 2-d x and mask of one shape (rows, cols)
// with their own element strides (dropout.apply_mask).
template <typename T>
__global__ void dropout(const T* x, const T* mask, long long rows, long long cols, long long xr, long long xc,
                        long long mr, long long mc, double keep, T* y, T* scaled) {
  GRID_STRIDE(i, rows * cols) {
    long long r = i / cols, k = i % cols, at = r * mr + k * mc, xat = r * xr + k * xc;
    T s = mask[at] / (T)keep;
    scaled[at] = s;
    y[xat] = x[xat] * s;
  }
}

// GELU's tanh form as activation.gelu computes it: near = x clipped to +-bound,
// t = tanh(scale * (near + cubic * near^3)), y = 0.5 x (1 + t); near and t kept if `keep`.
template <typename T>
__global__ void gelu(const T* x, long long size, double bound, double scale, double cubic, T* y, T* near_out,
                     T* t_out, int keep) {
  T high = (T)bound, low = (T)(-bound);
  GRID_STRIDE(i, size) {
    T v = x[i];
    T near = v < low ? low : (v > high ? high : v);
    T t = tanh((T)scale * (near + (T)cubic * (near * near * near)));
    y[i] = (T)0.5 * v * ((T)1 + t);
    if (keep) {
      near_out[i] = near;
      t_out[i] = t;
    }
  }
}

// activation.gelu_gradient: dy * (0.5 (1 + t) + 0.5 near (1 - t^2) slope), slope =
// scale * (1 + cubic3 * near^2) (cubic3 = 3 * cubic, as the standard path rounds it).
template <typename T>
__global__ void gelu_gradient(const T* dy, const T* near, const T* t, long long size, double scale, double cubic3,
                              T* dx) {
  GRID_STRIDE(i, size) {
    T n = near[i], ti = t[i];
    T slope = (T)scale * ((T)1 + (T)cubic3 * (n * n));
    dx[i] = dy[i] * ((T)0.5 * ((T)1 + ti) + (T)0.5 * n * ((T)1 - ti * ti) * slope);
  }
}

// Softmax cross-entropy of logits (rows, classes) by element strides, labels by stride, in
// one block: each thread takes rows, computes their log-likelihood as
// losses.softmax_cross_entropy does (target = keep * one_hot + spread) and writes the
// gradient (softmax - target) / rows (C order); the block sums the log-likelihoods in
// double, in a fixed order, into loss (0-d) = -their mean.
template <typename T, typename L>
__global__ void softmax_cross_entropy(const T* logits, long long rows, long long classes, long long rs,
                                      long long cs, const L* labels, long long ls, double keep, double spread,
                                      T* grad, T* loss) {
  double sum = 0, unused = 0;
  for (long long r = threadIdx.x; r < rows; r += BLOCK) {
    const T* row = logits + r * rs;
    T top = row[0];
    for (long long k = 1; k < classes; ++k) {
      T v = row[k * cs];
      if (v > top || (isnan(v) && !isnan(top))) top = v;
    }
    T exps = 0, along = 0;
    long long label = (long long)labels[r * ls];
    for (long long k = 0; k < classes; ++k) {
      T shifted = row[k * cs] - top;
      exps += exp(shifted);
      along += ((T)keep * (k == label ? (T)1 : (T)0) + (T)spread) * shifted;
    }
    sum += (double)(along - log(exps));
    for (long long k = 0; k < classes; ++k) {
      T target = (T)keep * (k == label ? (T)1 : (T)0) + (T)spread;
      grad[r * classes + k] = (exp(row[k * cs] - top) / exps - target) / (T)rows;
    }
  }
  block_sum2(sum, unused);
  if (threadIdx.x == 0) *loss = (T)(-(sum / rows));
}

// A matrix product that a CUDA graph can hold (CuPy refuses cuBLAS calls while a stream is
// captured): out = a (m, k) @ b (k, n), both read through element strides (any 2-d view),
// in ROWS x COLS tiles of out, DEPTH of k at a time through shared memory, PRODUCT_THREADS
// threads a block each summing 4 x 4 of its tile with fused multiply-adds (asked for by
// name: the module's --fmad=false leaves them alone). cupy.py picks the tile that pads
// (m, n) least: 64 x 64, or a thin one for the products of 16 or 32 channels. blockIdx.x
// picks the tile's columns, blockIdx.y its rows and its share of k: `span` values of k from
// (blockIdx.y / row tiles) * span. With more than one share (few tiles over a long k: a
// weight gradient sums over the whole batch), each block writes its share's product to
// out + share * m * n and add_shares sums them in share order, the same on every run.
// DEPTH and PRODUCT_THREADS are set by cupy.py, which sizes the grid by them.
__device__ float multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ double multiply_add(double a, double b, double c) { return fma(a, b, c); }

template <typename T, int ROWS, int COLS>
__global__ void product(const T* a, long long m, long long k, long long am, long long ak, const T* b, long long n,
                        long long bk, long long bn, long long span, T* out) {
  static_assert(ROWS % 4 == 0 && COLS % 4 == 0 && (ROWS / 4) * (COLS / 4) == PRODUCT_THREADS,
                "a thread sums 4 x 4 of a tile");
  constexpr unsigned THREAD_ROWS = ROWS / 4, THREAD_COLS = COLS / 4;  // the threads' layout over the tile
  __shared__ T as[DEPTH][ROWS + 1], bs[DEPTH][COLS + 1];  // +1: threads reading down a column hit other banks
  // ptxas refuses more static shared memory than 48 KiB, but only as it makes a GPU's code
  // (CuPy's -arch=sm_90 on an H100): NVRTC's PTX and the CPU build would take it.
  static_assert(sizeof(as) + sizeof(bs) <= 48 * 1024, "a block's tiles fit in 48 KiB of shared memory");
  unsigned t = threadIdx.x, tx = t % THREAD_COLS, ty = t / THREAD_COLS;
  long long row_tiles = (m + ROWS - 1) / ROWS, share = blockIdx.y / row_tiles;
  long long row0 = (long long)(blockIdx.y % row_tiles) * ROWS, col0 = (long long)blockIdx.x * COLS;
  long long k0 = share * span, k1 = k0 + span < k ? k0 + span : k;
  T sums[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) sums[i][j] = 0;
  for (long long d0 = k0; d0 < k1; d0 += DEPTH) {
    for (unsigned e = t; e < ROWS * DEPTH; e += PRODUCT_THREADS) {  // neighbouring threads read neighbours
      unsigned r = ak == 1 ? e / DEPTH : e % ROWS, d = ak == 1 ? e % DEPTH : e / ROWS;
      long long row = row0 + r, depth = d0 + d;
      as[d][r] = row < m && depth < k1 ? a[row * am + depth * ak] : (T)0;
    }
    for (unsigned e = t; e < COLS * DEPTH; e += PRODUCT_THREADS) {
      unsigned c = bn == 1 ? e % COLS : e / DEPTH, f = bn == 1 ? e / COLS : e % DEPTH;
      long long col = col0 + c, depth = d0 + f;
      bs[f][c] = col < n && depth < k1 ? b[depth * bk + col * bn] : (T)0;
    }
    __syncthreads();
    for (int d = 0; d < DEPTH; ++d) {
      T x[4], y[4];
      for (int i = 0; i < 4; ++i) x[i] = as[d][ty + THREAD_ROWS * i];
      for (int j = 0; j < 4; ++j) y[j] = bs[d][tx + THREAD_COLS * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) sums[i][j] = multiply_add(x[i], y[j], sums[i][j]);
    }
    __syncthreads();  // before the next depth overwrites the tiles
  }
  T* target = out + share * m * n;
  for (int i = 0; i < 4; ++i) {
    long long row = row0 + ty + THREAD_ROWS * i;
    for (int j = 0; j < 4; ++j) {
      long long col = col0 + tx + THREAD_COLS * j;
      if (row < m && col < n) target[row * n + col] = sums[i][j];
    }
  }
}

// out (size) = the sum of `shares` partial products (shares, size), in share order.
template <typename T>
__global__ void add_shares(const T* partials, long long size, long long shares, T* out) {
  GRID_STRIDE(i, size) {
    T sum = partials[i];
    for (long long s = 1; s < shares; ++s) sum += partials[s * size + i];
    out[i] = sum;
  }
}
