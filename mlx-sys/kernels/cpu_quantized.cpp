// Fast CPU kernels for MLX's affine-quantized matrix product `x @ wᵀ`, as an MLX primitive.
//
// Why: MLX's CPU backend computes quantized products on one thread with a scalar-ish kernel
// (a 4-bit SmolLM2 decoded at 7 tokens/s, about 6% of what memory bandwidth allows, and a
// 4-bit model prefilled 8x slower than its float32 version). This file adds one primitive,
// `CpuAffineQuantizedMatmul`, that MLX's lazy graph evaluates on its CPU stream like any other
// (so `eval`, `async_eval` and streams keep working):
//
// - up to 40 rows of x (decode, batched decode): `out = Σ_g scale_g·(x_g·q_g) + Σ_g bias_g·Σx_g`,
//   the packed values of each group made into float32 once and dotted with two rows of x at a
//   time. With AVX-512, 4-bit rows go 128 values at a time: shifting 16 packed words by 4j and
//   masking gives value j of each word, dotted with x permuted to match (no shuffles); 8-bit
//   rows 16 bytes at a time. AVX2 + FMA does the same 64 values at a time; other CPUs (and
//   ARM) run portable code. Products of 1 MiB and more split their output over a small pool of
//   threads.
// - more rows (prefill): tiles of `w` are dequantized to float32 (in parallel; 4-bit with
//   AVX-512 in the permuted order, with x permuted alike) and multiplied with the BLAS
//   `cblas_sgemm` MLX itself uses (OpenBLAS on Linux): a 4-bit prefill runs as fast as a
//   float32 one.
//
// Values: float32 arithmetic on exactly the dequantized values (`scale·q + bias`), scales and
// biases read in their own type; results equal MLX's own kernel within float32 rounding (the
// tests compare every bit width, group size and code path). Only float32 results (x of any
// floating type), the CPU stream, the affine mode, a transposed 2-D `w`, bits 2/3/4/5/6/8 and
// group sizes 32/64/128 take this path (in half precision MLX's kernel accumulates in the half
// type, and its values are the reference's);
// everything else (GPU streams, other modes, batched `w`) is MLX's op, so Metal and CUDA
// builds keep MLX's kernels.
//
// Packing (MLX's): value k of a row sits at bit offset k·bits of the row's bytes, little
// endian (for 2/4/8 bits this is "LSB first within each uint32"; for 3/5/6 bits MLX packs 8
// values into `bits` bytes, which is the same bit stream).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MLXM_X86 1
#endif

#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

#include "mlx/c/error.h"
#include "mlx/c/optional.h"
#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"

namespace mx = mlx::core;

namespace {

// ---------------------------------------------------------------------------------------------
// A small thread pool: the caller and `size() - 1` workers share the tasks of one `run`.
// Workers spin briefly between runs (products follow each other closely in a forward pass),
// then sleep on a condition variable. Leaked on purpose: it must outlive every MLX stream
// thread at exit, and its threads never hold anything that needs tearing down.

class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();
    return *pool;
  }

  int size() const {
    return workers_ + 1;
  }

  // Runs f(i) for every i in [0, tasks), on the workers and the calling thread; returns when
  // all are done. When another thread is using the pool, runs everything on the caller.
  void run(int tasks, const std::function<void(int)>& f) {
    if (tasks <= 0) {
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (workers_ == 0 || tasks == 1 || !busy.owns_lock()) {
      for (int i = 0; i < tasks; i++) {
        f(i);
      }
      return;
    }
    bool wake;
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &f;
      tasks_ = tasks;
      next_.store(0, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      wake = sleepers_ > 0;
    }
    if (wake) {
      cv_.notify_all();
    }
    int i;
    while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks) {
      f(i);
      done_.fetch_add(1, std::memory_order_release);
    }
    while (done_.load(std::memory_order_acquire) < tasks ||
           active_.load(std::memory_order_acquire) > 0) {
      pause();
    }
    std::lock_guard<std::mutex> lk(m_);
    job_ = nullptr;
    tasks_ = 0;
  }

 private:
  Pool() {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("MLX_MODELS_CPU_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) {
        n = v;
      }
    }
    n = std::clamp(n, 1, 64);
    workers_ = n - 1;
    for (int w = 0; w < workers_; w++) {
      std::thread([this] { loop(); }).detach();
    }
  }

  static void pause() {
#ifdef MLXM_X86
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      // Spin a little for the next run, then sleep.
      auto start = std::chrono::steady_clock::now();
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        pause();
        if (++spins % 256 == 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::microseconds(50)) {
          break;
        }
      }
      const std::function<void(int)>* job;
      int tasks;
      {
        std::unique_lock<std::mutex> lk(m_);
        if (generation_.load(std::memory_order_relaxed) == seen) {
          sleepers_++;
          cv_.wait(lk, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
          sleepers_--;
        }
        seen = generation_.load(std::memory_order_relaxed);
        job = job_;
        tasks = tasks_;
        if (tasks == 0) {
          continue;
        }
        active_.fetch_add(1, std::memory_order_relaxed);
      }
      int i;
      while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks) {
        (*job)(i);
        done_.fetch_add(1, std::memory_order_release);
      }
      active_.fetch_sub(1, std::memory_order_release);
    }
  }

  int workers_ = 0;
  std::mutex busy_;
  std::mutex m_;
  std::condition_variable cv_;
  int sleepers_ = 0;
  const std::function<void(int)>* job_ = nullptr;
  int tasks_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_{0};
  std::atomic<int> done_{0};
  std::atomic<int> active_{0};
};

// ---------------------------------------------------------------------------------------------
// CPU features, BLAS.

// Which code computes the products: AVX-512 where the CPU has it, else AVX2 + FMA, else
// portable C++ (which the compiler vectorizes for the baseline: SSE2 on x86-64, NEON on arm64).
// `mlx_models_set_cpu_kernels_isa` caps the level (for the tests of each code path).
enum Isa : int { PORTABLE = 0, AVX2 = 1, AVX512 = 2 };
std::atomic<int> isa_cap{AVX512};

int isa() {
#ifdef MLXM_X86
  static const int best = [] {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
          __builtin_cpu_supports("f16c"))) {
      return static_cast<int>(PORTABLE);
    }
    return static_cast<int>(__builtin_cpu_supports("avx512f") ? AVX512 : AVX2);
  }();
  return std::min(best, isa_cap.load(std::memory_order_relaxed));
#else
  return PORTABLE;
#endif
}

bool use_avx2() {
  return isa() >= AVX2;
}

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);

// The `cblas_sgemm` already loaded into the process (OpenBLAS ahead of the wheel's reference
// BLAS on Linux, Accelerate on macOS); null when there is none.
SgemmFn sgemm() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  return fn;
}
constexpr int CBLAS_ROW_MAJOR = 101;
constexpr int CBLAS_NO_TRANS = 111;
constexpr int CBLAS_TRANS = 112;

// ---------------------------------------------------------------------------------------------
// Conversions.

void to_float(const mx::array& a, const void* src, size_t n, float* dst) {
  switch (a.dtype()) {
    case mx::float32:
      std::memcpy(dst, src, n * sizeof(float));
      break;
    case mx::float16: {
      auto* s = static_cast<const mx::float16_t*>(src);
      for (size_t i = 0; i < n; i++) {
        dst[i] = static_cast<float>(s[i]);
      }
      break;
    }
    case mx::bfloat16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; i++) {
        uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
        std::memcpy(&dst[i], &bits, sizeof(float));
      }
      break;
    }
    default:
      throw std::invalid_argument("[quantized_matmul] unsupported floating type");
  }
}

// `x` (any layout) as a row-major float32 matrix of `x.size() / K` rows.
void gather_x(const mx::array& x, std::vector<float>& out) {
  out.resize(x.size());
  const size_t item = x.itemsize();
  const char* base = x.data<char>();
  if (x.flags().row_contiguous) {
    to_float(x, base, x.size(), out.data());
    return;
  }
  // General strides: walk the last axis one run at a time.
  const int nd = x.ndim();
  const int last = x.shape(-1);
  const int64_t last_stride = x.strides()[nd - 1];
  std::vector<char> run(static_cast<size_t>(last) * item);
  std::vector<int> idx(nd, 0);
  const size_t runs = x.size() / last;
  for (size_t r = 0; r < runs; r++) {
    int64_t off = 0;
    for (int d = 0; d < nd - 1; d++) {
      off += static_cast<int64_t>(idx[d]) * x.strides()[d];
    }
    for (int k = 0; k < last; k++) {
      std::memcpy(run.data() + k * item, base + (off + k * last_stride) * item, item);
    }
    to_float(x, run.data(), last, out.data() + r * last);
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < x.shape(d)) {
        break;
      }
      idx[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scales and biases are read where they are, in their own type.

enum class ScaleType { F32, F16, BF16 };

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float f16_to_float(uint16_t v) {
  mx::float16_t h;
  std::memcpy(&h, &v, sizeof(v));
  return static_cast<float>(h);
}

inline float scale_at(const void* base, ScaleType t, size_t i) {
  switch (t) {
    case ScaleType::F32:
      return static_cast<const float*>(base)[i];
    case ScaleType::F16:
      return f16_to_float(static_cast<const uint16_t*>(base)[i]);
    default:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Unpacking one group (`count` values, a multiple of 32, starting on a byte boundary) into
// float32, portable code.

struct Luts {
  float two[256][4];
  float four[256][2];
  Luts() {
    for (int b = 0; b < 256; b++) {
      for (int j = 0; j < 4; j++) {
        two[b][j] = static_cast<float>((b >> (2 * j)) & 3);
      }
      four[b][0] = static_cast<float>(b & 15);
      four[b][1] = static_cast<float>(b >> 4);
    }
  }
};
const Luts& luts() {
  static const Luts l;
  return l;
}

void unpack_generic(const uint8_t* p, int bits, int count, float* out) {
  switch (bits) {
    case 2: {
      const auto& lut = luts().two;
      for (int i = 0; i < count / 4; i++) {
        std::memcpy(out + 4 * i, lut[p[i]], 4 * sizeof(float));
      }
      return;
    }
    case 4: {
      const auto& lut = luts().four;
      for (int i = 0; i < count / 2; i++) {
        std::memcpy(out + 2 * i, lut[p[i]], 2 * sizeof(float));
      }
      return;
    }
    case 8:
      for (int i = 0; i < count; i++) {
        out[i] = static_cast<float>(p[i]);
      }
      return;
    default: {
      // 3, 5, 6 bits: 8 values in `bits` bytes.
      const uint64_t mask = (uint64_t{1} << bits) - 1;
      for (int i = 0; i < count / 8; i++) {
        uint64_t v = 0;
        std::memcpy(&v, p + i * bits, bits);  // little endian
        for (int j = 0; j < 8; j++) {
          out[8 * i + j] = static_cast<float>((v >> (j * bits)) & mask);
        }
      }
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The products.

struct Problem {
  const float* x;        // [M, K] float32
  const uint8_t* w;      // [N, K·bits/8]
  const void* scales;    // [N, G]
  const void* biases;    // [N, G]
  ScaleType stype;
  const float* xsum;     // [M, G]: Σ of each group of each row of x
  const float* xperm;    // [M, K]: x in the order of the 4-bit kernels (see `permute_x`), or null
  bool wide;             // xperm laid out for `rows_q4_avx512` (blocks of 128, then one of 64)
  float* out;            // [M, N] float32
  int M, N, K, G, gs, bits;
  size_t row_bytes;
};

// Output columns [n0, n1), every row of x, portable code.
void rows_portable(const Problem& p, int n0, int n1) {
  float q[128];
  std::vector<float> acc(p.M);
  for (int n = n0; n < n1; n++) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const uint8_t* wrow = p.w + n * p.row_bytes;
    for (int g = 0; g < p.G; g++) {
      const size_t sg = static_cast<size_t>(n) * p.G + g;
      const float s = scale_at(p.scales, p.stype, sg);
      const float b = scale_at(p.biases, p.stype, sg);
      unpack_generic(wrow + static_cast<size_t>(g) * p.gs * p.bits / 8, p.bits, p.gs, q);
      for (int m = 0; m < p.M; m++) {
        const float* xg = p.x + static_cast<size_t>(m) * p.K + static_cast<size_t>(g) * p.gs;
        float d = 0.0f;
        for (int k = 0; k < p.gs; k++) {
          d += xg[k] * q[k];
        }
        acc[m] += s * d + b * p.xsum[static_cast<size_t>(m) * p.G + g];
      }
    }
    for (int m = 0; m < p.M; m++) {
      p.out[static_cast<size_t>(m) * p.N + n] = acc[m];
    }
  }
}

#ifdef MLXM_X86
#define MLXM_AVX2 __attribute__((target("avx2,fma,f16c")))

MLXM_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Scales and biases of output rows [n0, n1) as float32: in place when they are float32, else
// converted in bulk (F16C for float16) into buffers of the calling thread.
MLXM_AVX2 void task_scales_avx2(const Problem& p, int n0, int n1, const float** s,
                                const float** b) {
  const size_t first = static_cast<size_t>(n0) * p.G;
  const size_t count = static_cast<size_t>(n1 - n0) * p.G;
  if (p.stype == ScaleType::F32) {
    *s = static_cast<const float*>(p.scales) + first;
    *b = static_cast<const float*>(p.biases) + first;
    return;
  }
  static thread_local std::vector<float> sbuf, bbuf;
  sbuf.resize(count);
  bbuf.resize(count);
  for (int which = 0; which < 2; which++) {
    const uint16_t* h = static_cast<const uint16_t*>(which == 0 ? p.scales : p.biases) + first;
    float* dst = which == 0 ? sbuf.data() : bbuf.data();
    size_t i = 0;
    if (p.stype == ScaleType::F16) {
      for (; i + 8 <= count; i += 8) {
        _mm256_storeu_ps(
            dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
      }
      for (; i < count; i++) {
        dst[i] = _cvtsh_ss(h[i]);
      }
    } else {
      for (; i + 8 <= count; i += 8) {
        __m256i v = _mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(v));
      }
      for (; i < count; i++) {
        dst[i] = bf16_to_float(h[i]);
      }
    }
  }
  *s = sbuf.data();
  *b = bbuf.data();
}

MLXM_AVX2 inline float dot_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  }
  float r = hsum(acc);
  for (; i < n; i++) {
    r += a[i] * b[i];
  }
  return r;
}

// Values 8c .. 8c+7 of a group as float32 (bits 2, 4, 8 straight from the packed bytes;
// other widths from `buf`, the group unpacked beforehand).
template <int BITS>
MLXM_AVX2 inline __m256 group_values(const uint8_t* g, int c, const float* buf) {
  if constexpr (BITS == 4) {
    uint32_t word;
    std::memcpy(&word, g + 4 * c, 4);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
  } else if constexpr (BITS == 8) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + 8 * c));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
  } else if constexpr (BITS == 2) {
    uint16_t half;
    std::memcpy(&half, g + 2 * c, 2);
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32(half), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(3)));
  } else {
    return _mm256_loadu_ps(buf + 8 * c);
  }
}

// Output columns [n0, n1) for rows [m0, m0 + MR) of x: each group's values are made once and
// dotted with the MR rows; the dot of a group is scaled once, its bias applied through Σx.
template <int BITS, int MR>
MLXM_AVX2 void rows_avx2(const Problem& p, int n0, int n1, int m0) {
  alignas(32) float buf[128];
  const int chunks = p.gs / 8;
  const float* x[MR];
  const float* xs[MR];
  for (int r = 0; r < MR; r++) {
    x[r] = p.x + static_cast<size_t>(m0 + r) * p.K;
    xs[r] = p.xsum + static_cast<size_t>(m0 + r) * p.G;
  }
  const float* scales;
  const float* biases;
  task_scales_avx2(p, n0, n1, &scales, &biases);
  for (int n = n0; n < n1; n++) {
    __m256 acc[MR];
    for (int r = 0; r < MR; r++) {
      acc[r] = _mm256_setzero_ps();
    }
    const uint8_t* wrow = p.w + n * p.row_bytes;
    const float* srow = scales + static_cast<size_t>(n - n0) * p.G;
    const float* brow = biases + static_cast<size_t>(n - n0) * p.G;
    for (int g = 0; g < p.G; g++) {
      const uint8_t* wg = wrow + static_cast<size_t>(g) * p.gs * BITS / 8;
      if constexpr (BITS != 2 && BITS != 4 && BITS != 8) {
        unpack_generic(wg, BITS, p.gs, buf);
      }
      __m256 d0[MR], d1[MR];
      for (int r = 0; r < MR; r++) {
        d0[r] = _mm256_setzero_ps();
        d1[r] = _mm256_setzero_ps();
      }
      const size_t k0 = static_cast<size_t>(g) * p.gs;
      for (int c = 0; c < chunks; c += 2) {
        const __m256 q0 = group_values<BITS>(wg, c, buf);
        const __m256 q1 = group_values<BITS>(wg, c + 1, buf);
        for (int r = 0; r < MR; r++) {
          d0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r] + k0 + 8 * c), q0, d0[r]);
          d1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r] + k0 + 8 * c + 8), q1, d1[r]);
        }
      }
      const __m256 sv = _mm256_set1_ps(srow[g]);
      for (int r = 0; r < MR; r++) {
        acc[r] = _mm256_fmadd_ps(sv, _mm256_add_ps(d0[r], d1[r]), acc[r]);
      }
    }
    for (int r = 0; r < MR; r++) {
      p.out[static_cast<size_t>(m0 + r) * p.N + n] = hsum(acc[r]) + dot_avx2(brow, xs[r], p.G);
    }
  }
}

// 4 bits, rows of `K % 64 == 0`: 64 values (8 packed words) at a time. Shifting all 8 words
// by 4j and masking gives value j of each word, i.e. values 8i + j (i = 0..7): dotted with x
// permuted the same way (`xperm`), each value costs a shift, a mask, a conversion and an FMA,
// with no broadcast or variable shift. Lanes 0-3 of a 64-value block are its first 32 values,
// lanes 4-7 the next 32, so with groups of 32 each half gets its own scale.
template <int MR>
MLXM_AVX2 void rows_q4_avx2(const Problem& p, int n0, int n1, int m0) {
  const int blocks = p.K / 64;
  const float* xp[MR];
  const float* xs[MR];
  for (int r = 0; r < MR; r++) {
    xp[r] = p.xperm + static_cast<size_t>(m0 + r) * p.K;
    xs[r] = p.xsum + static_cast<size_t>(m0 + r) * p.G;
  }
  const __m256i mask = _mm256_set1_epi32(15);
  const int groups_per_block = 64 / p.gs;  // 2 (gs 32) or 1
  const int blocks_per_group = p.gs / 64;  // 0 (gs 32), 1 or 2
  const float* scales;
  const float* biases;
  task_scales_avx2(p, n0, n1, &scales, &biases);
  for (int n = n0; n < n1; n++) {
    __m256 acc[MR];
    for (int r = 0; r < MR; r++) {
      acc[r] = _mm256_setzero_ps();
    }
    const uint8_t* wrow = p.w + n * p.row_bytes;
    const float* srow = scales + static_cast<size_t>(n - n0) * p.G;
    const float* brow = biases + static_cast<size_t>(n - n0) * p.G;
    for (int blk = 0; blk < blocks; blk++) {
      const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + 32 * blk));
      __m256 d0[MR], d1[MR];
      for (int r = 0; r < MR; r++) {
        d0[r] = _mm256_setzero_ps();
        d1[r] = _mm256_setzero_ps();
      }
      const size_t k0 = static_cast<size_t>(blk) * 64;
#define MLXM_Q4_STEP(J, D)                                                                   \
  {                                                                                          \
    const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(words, 4 * J), mask)); \
    for (int r = 0; r < MR; r++) {                                                           \
      D[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r] + k0 + 8 * J), q, D[r]);                 \
    }                                                                                        \
  }
      MLXM_Q4_STEP(0, d0)
      MLXM_Q4_STEP(1, d1)
      MLXM_Q4_STEP(2, d0)
      MLXM_Q4_STEP(3, d1)
      MLXM_Q4_STEP(4, d0)
      MLXM_Q4_STEP(5, d1)
      MLXM_Q4_STEP(6, d0)
      MLXM_Q4_STEP(7, d1)
#undef MLXM_Q4_STEP
      __m256 sv;
      if (groups_per_block == 2) {
        sv = _mm256_set_m128(_mm_set1_ps(srow[2 * blk + 1]), _mm_set1_ps(srow[2 * blk]));
      } else {
        sv = _mm256_set1_ps(srow[blk / blocks_per_group]);
      }
      for (int r = 0; r < MR; r++) {
        acc[r] = _mm256_fmadd_ps(sv, _mm256_add_ps(d0[r], d1[r]), acc[r]);
      }
    }
    for (int r = 0; r < MR; r++) {
      p.out[static_cast<size_t>(m0 + r) * p.N + n] = hsum(acc[r]) + dot_avx2(brow, xs[r], p.G);
    }
  }
}

template <int BITS>
MLXM_AVX2 void rows_avx2_all(const Problem& p, int n0, int n1) {
  if constexpr (BITS == 4) {
    if (p.xperm != nullptr && !p.wide) {
      int m = 0;
      for (; m + 4 <= p.M; m += 4) {
        rows_q4_avx2<4>(p, n0, n1, m);
      }
      if (p.M - m >= 2) {
        rows_q4_avx2<2>(p, n0, n1, m);
        m += 2;
      }
      if (m < p.M) {
        rows_q4_avx2<1>(p, n0, n1, m);
      }
      return;
    }
  }
  int m = 0;
  for (; m + 4 <= p.M; m += 4) {
    rows_avx2<BITS, 4>(p, n0, n1, m);
  }
  if (p.M - m >= 2) {
    rows_avx2<BITS, 2>(p, n0, n1, m);
    m += 2;
  }
  if (m < p.M) {
    rows_avx2<BITS, 1>(p, n0, n1, m);
  }
}

MLXM_AVX2 void rows_avx2_dispatch(const Problem& p, int n0, int n1) {
  switch (p.bits) {
    case 2:
      return rows_avx2_all<2>(p, n0, n1);
    case 3:
      return rows_avx2_all<3>(p, n0, n1);
    case 4:
      return rows_avx2_all<4>(p, n0, n1);
    case 5:
      return rows_avx2_all<5>(p, n0, n1);
    case 6:
      return rows_avx2_all<6>(p, n0, n1);
    default:
      return rows_avx2_all<8>(p, n0, n1);
  }
}

#define MLXM_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

// Scales and biases read in their own type, converted as they are used (F16C for float16).
template <ScaleType ST>
MLXM_AVX512 inline float scale1(const void* base, size_t i) {
  if constexpr (ST == ScaleType::F32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (ST == ScaleType::F16) {
    return _cvtsh_ss(static_cast<const uint16_t*>(base)[i]);
  } else {
    return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

// Values i .. i+3.
template <ScaleType ST>
MLXM_AVX512 inline __m128 scale4(const void* base, size_t i) {
  if constexpr (ST == ScaleType::F32) {
    return _mm_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m128i h = _mm_loadl_epi64(
        reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    if constexpr (ST == ScaleType::F16) {
      return _mm_cvtph_ps(h);
    } else {
      return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
    }
  }
}

// Σ_g base[row0 + g]·xs[g] over the G groups of a row.
template <ScaleType ST>
MLXM_AVX512 inline float bias_dot(const void* base, size_t row0, const float* xs, int G) {
  __m256 acc = _mm256_setzero_ps();
  int g = 0;
  for (; g + 8 <= G; g += 8) {
    __m256 b;
    if constexpr (ST == ScaleType::F32) {
      b = _mm256_loadu_ps(static_cast<const float*>(base) + row0 + g);
    } else {
      const __m128i h = _mm_loadu_si128(
          reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + row0 + g));
      if constexpr (ST == ScaleType::F16) {
        b = _mm256_cvtph_ps(h);
      } else {
        b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      }
    }
    acc = _mm256_fmadd_ps(b, _mm256_loadu_ps(xs + g), acc);
  }
  float r = hsum(acc);
  for (; g < G; g++) {
    r += scale1<ST>(base, row0 + g) * xs[g];
  }
  return r;
}

// 4 bits with AVX-512: as `rows_q4_avx2` with 128 values (16 packed words) per block: value j of
// each word i is value 8i + j, dotted with x permuted the same way; lane i belongs to group
// 8i / gs. A last block of 64 values (K % 128 == 64) takes the AVX2 step.
template <int MR, ScaleType ST>
MLXM_AVX512 void rows_q4_avx512(const Problem& p, int n0, int n1, int m0) {
  const int blocks = p.K / 128;
  const bool tail = p.K % 128 != 0;
  const float* xp[MR];
  const float* xs[MR];
  for (int r = 0; r < MR; r++) {
    xp[r] = p.xperm + static_cast<size_t>(m0 + r) * p.K;
    xs[r] = p.xsum + static_cast<size_t>(m0 + r) * p.G;
  }
  const __m512i mask = _mm512_set1_epi32(15);
  const __m256i mask8 = _mm256_set1_epi32(15);
  // Lane i of a block belongs to group (8i) / gs of the block.
  alignas(64) int lane_group[16];
  for (int i = 0; i < 16; i++) {
    lane_group[i] = 8 * i / p.gs;
  }
  const __m512i lanes = _mm512_load_si512(lane_group);
  const int groups_per_block = std::max(1, 128 / p.gs);
  for (int n = n0; n < n1; n++) {
    __m512 acc[MR];
    for (int r = 0; r < MR; r++) {
      acc[r] = _mm512_setzero_ps();
    }
    const uint8_t* wrow = p.w + n * p.row_bytes;
    const size_t row0 = static_cast<size_t>(n) * p.G;
    for (int blk = 0; blk < blocks; blk++) {
      const __m512i words = _mm512_loadu_si512(wrow + 64 * blk);
      __m512 d0[MR], d1[MR];
      for (int r = 0; r < MR; r++) {
        d0[r] = _mm512_setzero_ps();
        d1[r] = _mm512_setzero_ps();
      }
      const size_t k0 = static_cast<size_t>(blk) * 128;
#define MLXM_Q4_STEP512(J, D)                                                                 \
  {                                                                                           \
    const __m512 q = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(words, 4 * J), mask)); \
    for (int r = 0; r < MR; r++) {                                                            \
      D[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r] + k0 + 16 * J), q, D[r]);                 \
    }                                                                                         \
  }
      MLXM_Q4_STEP512(0, d0)
      MLXM_Q4_STEP512(1, d1)
      MLXM_Q4_STEP512(2, d0)
      MLXM_Q4_STEP512(3, d1)
      MLXM_Q4_STEP512(4, d0)
      MLXM_Q4_STEP512(5, d1)
      MLXM_Q4_STEP512(6, d0)
      MLXM_Q4_STEP512(7, d1)
#undef MLXM_Q4_STEP512
      // Scales of the block's groups, spread over their lanes.
      const size_t sblk = row0 + static_cast<size_t>(blk) * 128 / p.gs;
      __m512 sv;
      if (groups_per_block == 1) {
        sv = _mm512_set1_ps(scale1<ST>(p.scales, sblk));
      } else {
        __m128 four = groups_per_block == 4
            ? scale4<ST>(p.scales, sblk)
            : _mm_setr_ps(scale1<ST>(p.scales, sblk), scale1<ST>(p.scales, sblk + 1), 0.0f, 0.0f);
        sv = _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(four));
      }
      for (int r = 0; r < MR; r++) {
        acc[r] = _mm512_fmadd_ps(sv, _mm512_add_ps(d0[r], d1[r]), acc[r]);
      }
    }
    float tail_part[MR] = {};
    if (tail) {
      // The last 64 values: 8 words, x permuted as for the AVX2 kernel.
      const size_t k0 = static_cast<size_t>(blocks) * 128;
      const __m256i words =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + 64 * blocks));
      __m256 d[MR];
      for (int r = 0; r < MR; r++) {
        d[r] = _mm256_setzero_ps();
      }
      for (int j = 0; j < 8; j++) {
        const __m256 q = _mm256_cvtepi32_ps(
            _mm256_and_si256(_mm256_srlv_epi32(words, _mm256_set1_epi32(4 * j)), mask8));
        for (int r = 0; r < MR; r++) {
          d[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r] + k0 + 8 * j), q, d[r]);
        }
      }
      const size_t g0 = row0 + k0 / p.gs;
      __m256 sv = p.gs == 32 ? _mm256_set_m128(_mm_set1_ps(scale1<ST>(p.scales, g0 + 1)),
                                               _mm_set1_ps(scale1<ST>(p.scales, g0)))
                             : _mm256_set1_ps(scale1<ST>(p.scales, g0));
      for (int r = 0; r < MR; r++) {
        tail_part[r] = hsum(_mm256_mul_ps(sv, d[r]));
      }
    }
    for (int r = 0; r < MR; r++) {
      p.out[static_cast<size_t>(m0 + r) * p.N + n] = _mm512_reduce_add_ps(acc[r]) + tail_part[r] +
          bias_dot<ST>(p.biases, row0, xs[r], p.G);
    }
  }
}

// 8 bits with AVX-512: 16 values per step, straight from the packed bytes.
template <int MR, ScaleType ST>
MLXM_AVX512 void rows_q8_avx512(const Problem& p, int n0, int n1, int m0) {
  const float* x[MR];
  const float* xs[MR];
  for (int r = 0; r < MR; r++) {
    x[r] = p.x + static_cast<size_t>(m0 + r) * p.K;
    xs[r] = p.xsum + static_cast<size_t>(m0 + r) * p.G;
  }
  const int steps = p.gs / 16;
  for (int n = n0; n < n1; n++) {
    __m512 acc[MR];
    for (int r = 0; r < MR; r++) {
      acc[r] = _mm512_setzero_ps();
    }
    const uint8_t* wrow = p.w + n * p.row_bytes;
    const size_t row0 = static_cast<size_t>(n) * p.G;
    for (int g = 0; g < p.G; g++) {
      const uint8_t* wg = wrow + static_cast<size_t>(g) * p.gs;
      const size_t k0 = static_cast<size_t>(g) * p.gs;
      __m512 d[MR];
      for (int r = 0; r < MR; r++) {
        d[r] = _mm512_setzero_ps();
      }
      for (int c = 0; c < steps; c++) {
        const __m512 q = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wg + 16 * c))));
        for (int r = 0; r < MR; r++) {
          d[r] = _mm512_fmadd_ps(_mm512_loadu_ps(x[r] + k0 + 16 * c), q, d[r]);
        }
      }
      const __m512 sv = _mm512_set1_ps(scale1<ST>(p.scales, row0 + g));
      for (int r = 0; r < MR; r++) {
        acc[r] = _mm512_fmadd_ps(sv, d[r], acc[r]);
      }
    }
    for (int r = 0; r < MR; r++) {
      p.out[static_cast<size_t>(m0 + r) * p.N + n] =
          _mm512_reduce_add_ps(acc[r]) + bias_dot<ST>(p.biases, row0, xs[r], p.G);
    }
  }
}

#define MLXM_ROW_BLOCKS(NAME, ATTR)                                  \
  template <ScaleType ST>                                            \
  ATTR void NAME##_rows(const Problem& p, int n0, int n1) {          \
    /* Two rows at a time: four ran slower (measured), the compiler    \
       keeping their accumulators in memory. */                      \
    int m = 0;                                                       \
    for (; m + 2 <= p.M; m += 2) {                                   \
      NAME<2, ST>(p, n0, n1, m);                                     \
    }                                                                \
    if (m < p.M) {                                                   \
      NAME<1, ST>(p, n0, n1, m);                                     \
    }                                                                \
  }                                                                  \
  ATTR void NAME##_all(const Problem& p, int n0, int n1) {           \
    switch (p.stype) {                                               \
      case ScaleType::F32:                                           \
        return NAME##_rows<ScaleType::F32>(p, n0, n1);               \
      case ScaleType::F16:                                           \
        return NAME##_rows<ScaleType::F16>(p, n0, n1);               \
      default:                                                       \
        return NAME##_rows<ScaleType::BF16>(p, n0, n1);              \
    }                                                                \
  }
MLXM_ROW_BLOCKS(rows_q4_avx512, MLXM_AVX512)
MLXM_ROW_BLOCKS(rows_q8_avx512, MLXM_AVX512)
#undef MLXM_ROW_BLOCKS

// The scales (or biases) of the groups of a 128-value block from group g on, over its lanes.
template <ScaleType ST>
MLXM_AVX512 inline __m512 spread_scales(const void* base, size_t g, int groups_per_block,
                                        __m512i lanes) {
  if (groups_per_block == 1) {
    return _mm512_set1_ps(scale1<ST>(base, g));
  }
  __m128 four = groups_per_block == 4
      ? scale4<ST>(base, g)
      : _mm_setr_ps(scale1<ST>(base, g), scale1<ST>(base, g + 1), 0.0f, 0.0f);
  return _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(four));
}

// 4 bits with AVX-512, for the BLAS path: rows [n0, n1) dequantized in the order of `xperm`
// (the wide layout: blocks of 128 values, then one of 64), so that `x[:, π] · w[:, π]ᵀ`, the
// same product, runs on weights unpacked 16 values per shift.
template <ScaleType ST>
MLXM_AVX512 void dequantize_q4_permuted_avx512(const Problem& p, int n0, int n1, float* dst) {
  const int blocks = p.K / 128;
  const bool tail = p.K % 128 != 0;
  const __m512i mask = _mm512_set1_epi32(15);
  alignas(64) int lane_group[16];
  for (int i = 0; i < 16; i++) {
    lane_group[i] = 8 * i / p.gs;
  }
  const __m512i lanes = _mm512_load_si512(lane_group);
  const int groups_per_block = std::max(1, 128 / p.gs);
  for (int n = n0; n < n1; n++) {
    const uint8_t* wrow = p.w + n * p.row_bytes;
    const size_t row0 = static_cast<size_t>(n) * p.G;
    float* d = dst + static_cast<size_t>(n - n0) * p.K;
    for (int blk = 0; blk < blocks; blk++) {
      const __m512i words = _mm512_loadu_si512(wrow + 64 * blk);
      const size_t g = row0 + static_cast<size_t>(blk) * 128 / p.gs;
      const __m512 sv = spread_scales<ST>(p.scales, g, groups_per_block, lanes);
      const __m512 bv = spread_scales<ST>(p.biases, g, groups_per_block, lanes);
      float* out = d + static_cast<size_t>(blk) * 128;
      for (int j = 0; j < 8; j++) {
        const __m512 q = _mm512_cvtepi32_ps(
            _mm512_and_si512(_mm512_srlv_epi32(words, _mm512_set1_epi32(4 * j)), mask));
        _mm512_storeu_ps(out + 16 * j, _mm512_fmadd_ps(sv, q, bv));
      }
    }
    if (tail) {
      const size_t k0 = static_cast<size_t>(blocks) * 128;
      const __m256i words =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + 64 * blocks));
      const size_t g0 = row0 + k0 / p.gs;
      const __m256 sv = p.gs == 32 ? _mm256_set_m128(_mm_set1_ps(scale1<ST>(p.scales, g0 + 1)),
                                                     _mm_set1_ps(scale1<ST>(p.scales, g0)))
                                   : _mm256_set1_ps(scale1<ST>(p.scales, g0));
      const __m256 bv = p.gs == 32 ? _mm256_set_m128(_mm_set1_ps(scale1<ST>(p.biases, g0 + 1)),
                                                     _mm_set1_ps(scale1<ST>(p.biases, g0)))
                                   : _mm256_set1_ps(scale1<ST>(p.biases, g0));
      for (int j = 0; j < 8; j++) {
        const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(
            _mm256_srlv_epi32(words, _mm256_set1_epi32(4 * j)), _mm256_set1_epi32(15)));
        _mm256_storeu_ps(d + k0 + 8 * j, _mm256_fmadd_ps(sv, q, bv));
      }
    }
  }
}

MLXM_AVX512 void dequantize_q4_permuted(const Problem& p, int n0, int n1, float* dst) {
  switch (p.stype) {
    case ScaleType::F32:
      return dequantize_q4_permuted_avx512<ScaleType::F32>(p, n0, n1, dst);
    case ScaleType::F16:
      return dequantize_q4_permuted_avx512<ScaleType::F16>(p, n0, n1, dst);
    default:
      return dequantize_q4_permuted_avx512<ScaleType::BF16>(p, n0, n1, dst);
  }
}

// One group dequantized: `dst[k] = s·q[k] + b`.
template <int BITS>
MLXM_AVX2 void dequantize_group_avx2(const uint8_t* wg, int gs, float s, float b, float* dst) {
  alignas(32) float buf[128];
  if constexpr (BITS != 2 && BITS != 4 && BITS != 8) {
    unpack_generic(wg, BITS, gs, buf);
  }
  const __m256 sv = _mm256_set1_ps(s), bv = _mm256_set1_ps(b);
  for (int c = 0; c < gs / 8; c++) {
    _mm256_storeu_ps(dst + 8 * c, _mm256_fmadd_ps(sv, group_values<BITS>(wg, c, buf), bv));
  }
}
#endif

// Float32 copy of rows [n0, n1) of the dequantized weight into `dst` ([n1 - n0, K]).
void dequantize_rows(const Problem& p, int n0, int n1, float* dst) {
#ifdef MLXM_X86
  const bool avx2 = use_avx2();
#endif
  float q[128];
  for (int n = n0; n < n1; n++) {
    const uint8_t* wrow = p.w + n * p.row_bytes;
    float* d = dst + static_cast<size_t>(n - n0) * p.K;
    for (int g = 0; g < p.G; g++) {
      const size_t sg = static_cast<size_t>(n) * p.G + g;
      const float s = scale_at(p.scales, p.stype, sg);
      const float b = scale_at(p.biases, p.stype, sg);
      float* dg = d + static_cast<size_t>(g) * p.gs;
      const uint8_t* src = wrow + static_cast<size_t>(g) * p.gs * p.bits / 8;
#ifdef MLXM_X86
      if (avx2) {
        switch (p.bits) {
          case 2:
            dequantize_group_avx2<2>(src, p.gs, s, b, dg);
            continue;
          case 4:
            dequantize_group_avx2<4>(src, p.gs, s, b, dg);
            continue;
          case 8:
            dequantize_group_avx2<8>(src, p.gs, s, b, dg);
            continue;
          default:
            break;
        }
      }
#endif
      unpack_generic(src, p.bits, p.gs, q);
      for (int k = 0; k < p.gs; k++) {
        dg[k] = s * q[k] + b;
      }
    }
  }
}

// Rows of x at or above which the product goes through BLAS on dequantized tiles.
int blas_rows() {
  static const int rows = [] {
    if (const char* env = std::getenv("MLX_MODELS_QMM_BLAS_ROWS")) {
      int v = std::atoi(env);
      if (v > 0) {
        return v;
      }
    }
    // Measured on 2 cores (AVX-512): the direct kernel wins up to about 40 rows (at 16 rows
    // 190 us against 300 us for a 1536x576 4-bit product), BLAS on dequantized tiles above.
    return 40;
  }();
  return rows;
}

void compute(Problem& p) {
  Pool& pool = Pool::get();
  // Work in packed bytes (times rows): products under 1 MiB run on the calling thread alone
  // (measured on 2 cores: handing a few hundred KiB to a second thread gained nothing and
  // often lost, larger ones ran 1.7-1.9x faster). `MLX_MODELS_QMM_PARALLEL_BYTES` moves the
  // threshold.
  const size_t total = static_cast<size_t>(p.N) * p.row_bytes * std::max(1, p.M);
  static const size_t min_parallel = [] {
    const char* env = std::getenv("MLX_MODELS_QMM_PARALLEL_BYTES");
    return env != nullptr ? static_cast<size_t>(std::atoll(env)) : static_cast<size_t>(1) << 20;
  }();
  const int threads = total < min_parallel ? 1 : pool.size();

  SgemmFn gemm = sgemm();
  if (p.M >= blas_rows() && gemm != nullptr) {
    // Tiles of about 4 MiB of float32 weights, each dequantized by all threads, then one sgemm.
    const int tile = std::clamp<int>(static_cast<int>((1 << 20) / std::max(1, p.K)), 32, p.N);
    // (A thread-local buffer: the workers get its address, never the name, which would be
    // their own, empty, instance.)
    static thread_local std::vector<float> wf;
    wf.resize(static_cast<size_t>(tile) * p.K);
    float* const wbuf = wf.data();
    // 4 bits with AVX-512: weights dequantized in x's permuted order (the same product).
#ifdef MLXM_X86
    const bool permuted = p.bits == 4 && p.wide && p.xperm != nullptr && isa() >= AVX512;
#else
    const bool permuted = false;
#endif
    const float* xa = permuted ? p.xperm : p.x;
    for (int n0 = 0; n0 < p.N; n0 += tile) {
      const int rows = std::min(tile, p.N - n0);
      const int parts = std::min(threads, std::max(1, rows / 8));
      const int per = (rows + parts - 1) / parts;
      pool.run(parts, [&](int t) {
        const int a = n0 + t * per;
        const int e = std::min(n0 + rows, a + per);
        if (a < e) {
          float* dst = wbuf + static_cast<size_t>(a - n0) * p.K;
#ifdef MLXM_X86
          if (permuted) {
            dequantize_q4_permuted(p, a, e, dst);
            return;
          }
#endif
          dequantize_rows(p, a, e, dst);
        }
      });
      gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, p.M, rows, p.K, 1.0f, xa, p.K, wbuf,
           p.K, 0.0f, p.out + n0, p.N);
    }
    return;
  }

  const int tasks = threads == 1 ? 1 : std::min(p.N / 8 + 1, threads * 4);
  const int per = (p.N + tasks - 1) / tasks;
#ifdef MLXM_X86
  const bool avx2 = use_avx2() && p.gs <= 128;
  const bool avx512 = isa() >= AVX512 && p.gs <= 128;
#endif
  pool.run(tasks, [&](int t) {
    const int a = t * per;
    const int e = std::min(p.N, a + per);
    if (a >= e) {
      return;
    }
#ifdef MLXM_X86
    if (avx512 && p.bits == 4 && p.wide && p.xperm != nullptr) {
      rows_q4_avx512_all(p, a, e);
      return;
    }
    if (avx512 && p.bits == 8) {
      rows_q8_avx512_all(p, a, e);
      return;
    }
    if (avx2) {
      rows_avx2_dispatch(p, a, e);
      return;
    }
#endif
    rows_portable(p, a, e);
  });
}

ScaleType scale_type(const mx::array& a) {
  switch (a.dtype()) {
    case mx::float32:
      return ScaleType::F32;
    case mx::float16:
      return ScaleType::F16;
    case mx::bfloat16:
      return ScaleType::BF16;
    default:
      throw std::invalid_argument("[quantized_matmul] unsupported scale type");
  }
}

// ---------------------------------------------------------------------------------------------
// The primitive.

class CpuAffineQuantizedMatmul : public mx::UnaryPrimitive {
 public:
  CpuAffineQuantizedMatmul(mx::Stream stream, int group_size, int bits)
      : mx::UnaryPrimitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) {
      encoder.set_input_array(in);
    }
    out.set_data(mx::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
    encoder.dispatch([x = mx::array::unsafe_weak_copy(inputs[0]),
                      w = mx::array::unsafe_weak_copy(inputs[1]),
                      scales = mx::array::unsafe_weak_copy(inputs[2]),
                      biases = mx::array::unsafe_weak_copy(inputs[3]),
                      out = mx::array::unsafe_weak_copy(out), gs = group_size_,
                      bits = bits_]() mutable { run(x, w, scales, biases, out, gs, bits); });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[CpuAffineQuantizedMatmul] runs on the CPU only");
  }

  const char* name() const override {
    return "CpuAffineQuantizedMatmul";
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const CpuAffineQuantizedMatmul*>(&other);
    return o != nullptr && o->group_size_ == group_size_ && o->bits_ == bits_;
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  static void run(const mx::array& x, const mx::array& w, const mx::array& scales,
                  const mx::array& biases, mx::array& out, int gs, int bits) {
    if (!w.flags().row_contiguous || !scales.flags().row_contiguous ||
        !biases.flags().row_contiguous) {
      throw std::runtime_error("[CpuAffineQuantizedMatmul] weights must be row contiguous");
    }
    if (scales.dtype() != biases.dtype()) {
      throw std::runtime_error("[CpuAffineQuantizedMatmul] scales and biases differ in type");
    }
    if (out.dtype() != mx::float32) {
      // Built only for float32 results (see `mlx_models_quantized_matmul`).
      throw std::runtime_error("[CpuAffineQuantizedMatmul] float32 results only");
    }
    static thread_local std::vector<float> xf, xs, xp;
    const int K = x.shape(-1);
    const int N = w.shape(0);
    const int G = K / gs;
    const int M = static_cast<int>(x.size() / std::max(1, K));
    gather_x(x, xf);
    xs.resize(static_cast<size_t>(M) * G);
    for (int m = 0; m < M; m++) {
      for (int g = 0; g < G; g++) {
        const float* xg = xf.data() + static_cast<size_t>(m) * K + static_cast<size_t>(g) * gs;
        float s = 0.0f;
        for (int k = 0; k < gs; k++) {
          s += xg[k];
        }
        xs[static_cast<size_t>(m) * G + g] = s;
      }
    }
    // x in the order of the 4-bit kernels: in each block of 8·L values (L lanes: 16 for the
    // AVX-512 kernel, whose last block may have 64 values, else 8), value 8i + j at L·j + i.
    const float* xperm = nullptr;
    const int level = isa();
    const bool wide = level >= AVX512;
    if (bits == 4 && K % 64 == 0 && (M < blas_rows() || wide) && level >= AVX2) {
      xp.resize(static_cast<size_t>(M) * K);
      for (int m = 0; m < M; m++) {
        const float* src = xf.data() + static_cast<size_t>(m) * K;
        float* dst = xp.data() + static_cast<size_t>(m) * K;
        for (int b = 0; b < K;) {
          const int lanes = (wide && K - b >= 128) ? 16 : 8;
          for (int i = 0; i < lanes; i++) {
            for (int j = 0; j < 8; j++) {
              dst[b + lanes * j + i] = src[b + 8 * i + j];
            }
          }
          b += 8 * lanes;
        }
      }
      xperm = xp.data();
    }
    Problem p{xf.data(),
              w.data<uint8_t>(),
              scales.data<void>(),
              biases.data<void>(),
              scale_type(scales),
              xs.data(),
              xperm,
              wide,
              out.data<float>(),
              M,
              N,
              K,
              G,
              gs,
              bits,
              static_cast<size_t>(K) * bits / 8};
    if (M > 0 && N > 0) {
      compute(p);
    }
  }

  int group_size_;
  int bits_;
};

bool kernels_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("MLX_MODELS_CPU_KERNELS");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return on;
}

std::atomic<bool> enabled_override{true};

// Not turned off by the environment nor by `mlx_models_set_cpu_kernels`.
bool kernels_on() {
  return kernels_enabled() && enabled_override.load(std::memory_order_relaxed);
}

// An operand as an input of our primitive: as is when already evaluated and row contiguous,
// else through `contiguous` (which shares the buffer when the result turns out contiguous).
mx::array contiguous_input(const mx::array& a, const mx::Stream& s) {
  if (a.is_available() && a.flags().row_contiguous) {
    return a;
  }
  return mx::contiguous(a, false, s);
}

}  // namespace

// `mx.quantized_matmul` with MLX's own checks and result; on a CPU stream, for affine
// quantization of a transposed 2-D `w`, computed by the kernels above.
extern "C" int mlx_models_quantized_matmul(mlx_array* res, const mlx_array x, const mlx_array w,
                                           const mlx_array scales,
                                           const mlx_array biases /* may be null */,
                                           bool transpose, mlx_optional_int group_size,
                                           mlx_optional_int bits, const char* mode,
                                           const mlx_stream s) {
  try {
    const auto& stream = mlx_stream_get_(s);
    auto reference = mx::quantized_matmul(
        mlx_array_get_(x), mlx_array_get_(w), mlx_array_get_(scales),
        (biases.ctx ? std::make_optional(mlx_array_get_(biases)) : std::nullopt), transpose,
        (group_size.has_value ? std::make_optional<int>(group_size.value) : std::nullopt),
        (bits.has_value ? std::make_optional<int>(bits.value) : std::nullopt), std::string(mode),
        stream);
    // MLX's op has checked the arguments; ours takes them as given (the kernel reads x, the
    // scales and the biases in their own floating types, so MLX's conversions of them to the
    // result type, made again at every call, are not needed). Only float32 results: in float16
    // and bfloat16 MLX's CPU kernel accumulates in the half type itself, so the reference's
    // half-precision values (mlx-lm's, the parity oracle) are only MLX's kernel's.
    const auto& xa = mlx_array_get_(x);
    const auto& wa = mlx_array_get_(w);
    const auto& sa = mlx_array_get_(scales);
    const int gs = group_size.has_value ? group_size.value : 64;
    const int b = bits.has_value ? bits.value : 4;
    auto floating = [](const mx::array& a) {
      return a.dtype() == mx::float32 || a.dtype() == mx::float16 || a.dtype() == mx::bfloat16;
    };
    const bool ours = kernels_on() &&
        stream.device == mx::Device::cpu && std::string(mode) == "affine" && transpose &&
        biases.ctx != nullptr && wa.ndim() == 2 && (gs == 32 || gs == 64 || gs == 128) &&
        (b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8) && xa.ndim() >= 1 &&
        xa.shape(-1) > 0 && xa.shape(-1) % gs == 0 && floating(xa) && floating(sa) &&
        mlx_array_get_(biases).dtype() == sa.dtype() && reference.dtype() == mx::float32;
    if (!ours) {
      mlx_array_set_(*res, std::move(reference));
      return 0;
    }
    std::vector<mx::array> ins = {xa, contiguous_input(wa, stream), contiguous_input(sa, stream),
                                  contiguous_input(mlx_array_get_(biases), stream)};
    mlx_array_set_(*res,
                   mx::array(reference.shape(), reference.dtype(),
                             std::make_shared<CpuAffineQuantizedMatmul>(stream, gs, b),
                             std::move(ins)));
  } catch (std::exception& e) {
    mlx_error(e.what());
    return 1;
  }
  return 0;
}

// Turns the kernels above off (MLX's own quantized product everywhere) or on again, for
// comparisons. `MLX_MODELS_CPU_KERNELS=0` turns them off for the whole process.
extern "C" void mlx_models_set_cpu_kernels(bool on) {
  enabled_override.store(on, std::memory_order_relaxed);
}

// Whether the kernels above are in use (not turned off by the environment or the call above).
extern "C" bool mlx_models_cpu_kernels() {
  return kernels_on();
}

// Caps the instruction set the kernels use (0 portable, 1 AVX2, 2 AVX-512: the best the CPU
// has), for the tests of each code path.
extern "C" void mlx_models_set_cpu_kernels_isa(int cap) {
  isa_cap.store(std::clamp(cap, 0, 2), std::memory_order_relaxed);
}
