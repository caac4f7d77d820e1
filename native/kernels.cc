// optimer's native kernels: the merge θ = θ_base + Σ_k w_k·δ_k and what pool build needs (δ = θ_ckpt − θ_base,
// dot products for the Gram matrix), for float32, float16 and bfloat16.
//
// Every result is bit-identical to the JavaScript kernels (worker/merge/kernels.ts, shared/kernels/js.ts), which
// define the arithmetic:
//   merge: the vectors are taken four at a time; per group, in double precision and left to right,
//          acc = (float)(acc + w0·x0 + w1·x1 + w2·x2 + w3·x3), acc starting at the base; the weights are doubles;
//          the output is acc rounded (to nearest even) to the dtype.
//   delta: (float)(c − b), rounded to the dtype (a float subtraction: computing it in double and rounding, as
//          JavaScript does, gives the same float).
//   dot:   eight double partial sums, element i in sum i mod 8, in order; ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)).
// Only NaN payloads (and a NaN's sign) may differ: IEEE 754 does not define them, nor does V8.
// Built with -ffp-contract=off (no FMA contraction) and without -ffast-math, so the compiler keeps that order.
//
// One binary for every x86-64 CPU: the AVX-512 and AVX2+F16C paths are compiled with target attributes and chosen
// at load time with __builtin_cpu_supports; elsewhere (or on other architectures) the portable scalar path runs.
// OPTIMER_NAPI_MIN: compile against napi-min.h alone, as machines without Node's headers do (a test checks it)
#if defined(__has_include) && !defined(OPTIMER_NAPI_MIN)
#if __has_include(<node_api.h>)
#include <node_api.h>
#else
#include "napi-min.h"
#endif
#else
#include "napi-min.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <unordered_map>
#define OPTIMER_MMAP 1
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#define OPTIMER_X86 1
#endif

namespace {

enum Dtype { F32 = 0, F16 = 1, BF16 = 2 };
constexpr size_t kElemBytes[] = {4, 2, 2};
constexpr size_t kMaxVectors = 64;

// ---- scalar conversions, exactly as shared/onnx/dtype.ts ---------------------------------------------------

inline float bitsToFloat(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t floatToBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float halfTable[65536];

void buildHalfTable() {
  for (uint32_t h = 0; h < 65536; h++) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, frac = h & 0x3ff, bits;
    if (exp == 0) {
      if (frac == 0) bits = sign;
      else {
        int e = -1;
        uint32_t f = frac;
        do {
          f <<= 1;
          e++;
        } while ((f & 0x400) == 0);
        bits = sign | (uint32_t(127 - 15 - e) << 23) | ((f & 0x3ff) << 13);
      }
    } else if (exp == 31) bits = sign | 0x7f800000u | (frac << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (frac << 13);
    halfTable[h] = bitsToFloat(bits);
  }
}

inline uint16_t halfFromFloatBits(uint32_t b) {
  uint32_t sign = (b >> 16) & 0x8000, exp = (b >> 23) & 0xff, frac = b & 0x7fffff;
  if (exp == 0xff) return uint16_t(sign | 0x7c00 | (frac ? 0x200 : 0));
  int e = int(exp) - 127 + 15;
  if (e >= 0x1f) return uint16_t(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    uint32_t m = frac | 0x800000, shift = uint32_t(14 - e), h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return uint16_t(sign | h);
  }
  uint32_t h = (uint32_t(e) << 10) | (frac >> 13), rem = frac & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return uint16_t(sign | h);
}

inline uint16_t bf16FromFloatBits(uint32_t b) {
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffff)) return uint16_t((b >> 16) | 0x40);
  return uint16_t((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

inline float load1(int dt, const uint8_t* p, size_t i) {
  if (dt == F32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return dt == F16 ? halfTable[h] : bitsToFloat(uint32_t(h) << 16);
}

inline uint16_t to16(int dt, float v) {
  return dt == F16 ? halfFromFloatBits(floatToBits(v)) : bf16FromFloatBits(floatToBits(v));
}

inline void store1(int dt, uint8_t* p, size_t i, float v) {
  if (dt == F32) {
    std::memcpy(p + 4 * i, &v, 4);
    return;
  }
  uint16_t h = to16(dt, v);
  std::memcpy(p + 2 * i, &h, 2);
}

struct MergeArgs {
  int dt;
  const uint8_t* base;
  const uint8_t* const* d;
  const double* w;
  size_t K;
  uint8_t* out;
  // out is float32 whatever dt: each result rounded to dt, then widened exactly (what a 16-bit weight is worth)
  bool widen;
};

// v rounded to dt and widened back to float32 (the identity for F32)
inline float roundTrip1(int dt, float v) {
  if (dt == F32) return v;
  uint16_t h = to16(dt, v);
  return dt == F16 ? halfTable[h] : bitsToFloat(uint32_t(h) << 16);
}

void mergeScalar(const MergeArgs& a, size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    float acc = load1(a.dt, a.base, i);
    for (size_t k = 0; k < a.K; k += 4) {
      double s = acc;
      size_t end = k + 4 < a.K ? k + 4 : a.K;
      for (size_t j = k; j < end; j++) s = s + a.w[j] * double(load1(a.dt, a.d[j], i));
      acc = float(s);
    }
    if (a.widen) store1(F32, a.out, i, roundTrip1(a.dt, acc));
    else store1(a.dt, a.out, i, acc);
  }
}

void deltaScalar(int dt, const uint8_t* c, const uint8_t* b, uint8_t* out, float* rounded, size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    float v = load1(dt, c, i) - load1(dt, b, i);
    store1(dt, out, i, v);
    if (rounded) rounded[i] = load1(dt, out, i);
  }
}

// ---- x86-64 SIMD paths ------------------------------------------------------------------------------------

#ifdef OPTIMER_X86

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,avx2,fma")))
#define AVX2 __attribute__((target("avx2,f16c")))

AVX512 inline __m512 widen16(int dt, __m256i h) {
  if (dt == F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 inline __m512 load16(int dt, const uint8_t* p, size_t i) {
  if (dt == F32) return _mm512_loadu_ps(p + 4 * i);
  return widen16(dt, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * i)));
}

AVX512 inline __m256i to16x16(int dt, __m512 v) {
  __m256i h;
  if (dt == F16) h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  else {
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    __m512i nanq = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    __mmask16 isnan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    h = _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, isnan, nanq));
  }
  return h;
}

AVX512 inline void store16(int dt, uint8_t* p, size_t i, __m512 v) {
  if (dt == F32) {
    _mm512_storeu_ps(p + 4 * i, v);
    return;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 2 * i), to16x16(dt, v));
}

AVX512 void mergeAvx512(const MergeArgs& a, size_t from, size_t to) {
  size_t i = from;
  for (; i + 16 <= to; i += 16) {
    __m512 acc = load16(a.dt, a.base, i);
    for (size_t k = 0; k < a.K; k += 4) {
      __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(acc));
      __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
      size_t end = k + 4 < a.K ? k + 4 : a.K;
      for (size_t j = k; j < end; j++) {
        __m512 x = load16(a.dt, a.d[j], i);
        __m512d wj = _mm512_set1_pd(a.w[j]);
        lo = _mm512_add_pd(lo, _mm512_mul_pd(wj, _mm512_cvtps_pd(_mm512_castps512_ps256(x))));
        hi = _mm512_add_pd(hi, _mm512_mul_pd(wj, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))));
      }
      acc = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo))), _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1));
    }
    if (!a.widen) store16(a.dt, a.out, i, acc);
    else _mm512_storeu_ps(a.out + 4 * i, a.dt == F32 ? acc : widen16(a.dt, to16x16(a.dt, acc)));
  }
  mergeScalar(a, i, to);
}

AVX512 void deltaAvx512(int dt, const uint8_t* c, const uint8_t* b, uint8_t* out, float* rounded, size_t from, size_t to) {
  size_t i = from;
  for (; i + 16 <= to; i += 16) {
    __m512 v = _mm512_sub_ps(load16(dt, c, i), load16(dt, b, i));
    store16(dt, out, i, v);
    if (rounded) _mm512_storeu_ps(rounded + i, dt == F32 ? v : load16(dt, out, i));
  }
  deltaScalar(dt, c, b, out, rounded, i, to);
}

AVX2 inline __m256 widen8(int dt, __m128i h) {
  if (dt == F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 inline __m256 load8(int dt, const uint8_t* p, size_t i) {
  if (dt == F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p + 4 * i));
  return widen8(dt, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i)));
}

AVX2 inline __m128i to8x16(int dt, __m256 v) {
  __m128i h;
  if (dt == F16) h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  else {
    __m256i b = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    __m256i nanq = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, nanq, isnan);
    // 32 → 16 bits: packus works within 128-bit lanes, the permute puts the halves back in order
    r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    h = _mm256_castsi256_si128(r);
  }
  return h;
}

AVX2 inline void store8(int dt, uint8_t* p, size_t i, __m256 v) {
  if (dt == F32) {
    _mm256_storeu_ps(reinterpret_cast<float*>(p + 4 * i), v);
    return;
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2 * i), to8x16(dt, v));
}

AVX2 void mergeAvx2(const MergeArgs& a, size_t from, size_t to) {
  size_t i = from;
  for (; i + 8 <= to; i += 8) {
    __m256 acc = load8(a.dt, a.base, i);
    for (size_t k = 0; k < a.K; k += 4) {
      __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(acc));
      __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(acc, 1));
      size_t end = k + 4 < a.K ? k + 4 : a.K;
      for (size_t j = k; j < end; j++) {
        __m256 x = load8(a.dt, a.d[j], i);
        __m256d wj = _mm256_set1_pd(a.w[j]);
        lo = _mm256_add_pd(lo, _mm256_mul_pd(wj, _mm256_cvtps_pd(_mm256_castps256_ps128(x))));
        hi = _mm256_add_pd(hi, _mm256_mul_pd(wj, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))));
      }
      acc = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
    }
    if (!a.widen) store8(a.dt, a.out, i, acc);
    else _mm256_storeu_ps(reinterpret_cast<float*>(a.out + 4 * i), a.dt == F32 ? acc : widen8(a.dt, to8x16(a.dt, acc)));
  }
  mergeScalar(a, i, to);
}

AVX2 void deltaAvx2(int dt, const uint8_t* c, const uint8_t* b, uint8_t* out, float* rounded, size_t from, size_t to) {
  size_t i = from;
  for (; i + 8 <= to; i += 8) {
    __m256 v = _mm256_sub_ps(load8(dt, c, i), load8(dt, b, i));
    store8(dt, out, i, v);
    if (rounded) _mm256_storeu_ps(rounded + i, dt == F32 ? v : load8(dt, out, i));
  }
  deltaScalar(dt, c, b, out, rounded, i, to);
}

// dots: lane l of the accumulators holds the elements i ≡ l (mod 8); products of floats are exact in double
AVX2 void dotsAvx2(const float* const* v, size_t K, size_t n, double* lanes /* K*K*8 */) {
  constexpr size_t B = 512;
  std::vector<double> blk(K * B);
  size_t n8 = n - n % 8;
  for (size_t s = 0; s < n8; s += B) {
    size_t m = n8 - s < B ? n8 - s : B;
    for (size_t k = 0; k < K; k++)
      for (size_t e = 0; e < m; e += 4) _mm256_storeu_pd(&blk[k * B + e], _mm256_cvtps_pd(_mm_loadu_ps(v[k] + s + e)));
    for (size_t p = 0; p < K; p++)
      for (size_t q = p; q < K; q++) {
        double* L = lanes + (p * K + q) * 8;
        __m256d a0 = _mm256_loadu_pd(L), a1 = _mm256_loadu_pd(L + 4);
        const double* x = &blk[p * B];
        const double* y = &blk[q * B];
        for (size_t e = 0; e < m; e += 8) {
          a0 = _mm256_add_pd(a0, _mm256_mul_pd(_mm256_loadu_pd(x + e), _mm256_loadu_pd(y + e)));
          a1 = _mm256_add_pd(a1, _mm256_mul_pd(_mm256_loadu_pd(x + e + 4), _mm256_loadu_pd(y + e + 4)));
        }
        _mm256_storeu_pd(L, a0);
        _mm256_storeu_pd(L + 4, a1);
      }
  }
  for (size_t p = 0; p < K; p++)
    for (size_t q = p; q < K; q++)
      for (size_t i = n8; i < n; i++) lanes[(p * K + q) * 8 + (i - n8)] += double(v[p][i]) * double(v[q][i]);
}

#endif  // OPTIMER_X86

void dotsScalar(const float* const* v, size_t K, size_t n, double* lanes) {
  for (size_t p = 0; p < K; p++)
    for (size_t q = p; q < K; q++) {
      double* L = lanes + (p * K + q) * 8;
      for (size_t i = 0; i < n; i++) L[i % 8] += double(v[p][i]) * double(v[q][i]);
    }
}

// ---- dispatch ---------------------------------------------------------------------------------------------

using MergeFn = void (*)(const MergeArgs&, size_t, size_t);
using DeltaFn = void (*)(int, const uint8_t*, const uint8_t*, uint8_t*, float*, size_t, size_t);
using DotsFn = void (*)(const float* const*, size_t, size_t, double*);
MergeFn mergeImpl = mergeScalar;
DeltaFn deltaImpl = deltaScalar;
DotsFn dotsImpl = dotsScalar;
const char* simdName = "scalar";

void choose() {
  buildHalfTable();
#ifdef OPTIMER_X86
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  if (avx2) {
    mergeImpl = mergeAvx2;
    deltaImpl = deltaAvx2;
    dotsImpl = dotsAvx2;
    simdName = "avx2";
  }
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    mergeImpl = mergeAvx512;
    deltaImpl = deltaAvx512;
    simdName = "avx512";
  }
#endif
  const char* forced = std::getenv("OPTIMER_NATIVE_SIMD");  // for tests of every path on one machine
  if (forced && std::strcmp(forced, "scalar") == 0) {
    mergeImpl = mergeScalar;
    deltaImpl = deltaScalar;
    dotsImpl = dotsScalar;
    simdName = "scalar";
  }
#ifdef OPTIMER_X86
  else if (forced && std::strcmp(forced, "avx2") == 0 && std::strcmp(simdName, "scalar") != 0) {
    mergeImpl = mergeAvx2;
    deltaImpl = deltaAvx2;
    dotsImpl = dotsAvx2;
    simdName = "avx2";
  }
#endif
}

// ---- Node-API glue ----------------------------------------------------------------------------------------

struct View {
  uint8_t* data = nullptr;
  size_t bytes = 0;
  napi_typedarray_type type = napi_uint8_array;
};

bool fail(napi_env env, const char* msg) {
  napi_throw_error(env, "ERR_OPTIMER_NATIVE", msg);
  return false;
}

bool view(napi_env env, napi_value v, View* out) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return fail(env, "optimer native: expected a typed array");
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t off = 0;
  if (napi_get_typedarray_info(env, v, &out->type, &length, &data, &ab, &off) != napi_ok) return fail(env, "optimer native: bad typed array");
  size_t elem = out->type == napi_float32_array || out->type == napi_uint32_array ? 4
               : out->type == napi_float64_array                                 ? 8
               : out->type == napi_uint8_array                                   ? 1
                                                                                 : 0;
  if (elem == 0) return fail(env, "optimer native: expected a Uint8Array, Uint32Array, Float32Array or Float64Array");
  out->data = static_cast<uint8_t*>(data);
  out->bytes = length * elem;
  return true;
}

bool u32(napi_env env, napi_value v, uint32_t* out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) return fail(env, "optimer native: expected a non-negative integer");
  return true;
}

bool views(napi_env env, napi_value arr, std::vector<View>* out) {
  bool is = false;
  uint32_t len = 0;
  if (napi_is_array(env, arr, &is) != napi_ok || !is || napi_get_array_length(env, arr, &len) != napi_ok)
    return fail(env, "optimer native: expected an array of typed arrays");
  if (len > kMaxVectors) return fail(env, "optimer native: more than 64 vectors");
  out->resize(len);
  for (uint32_t i = 0; i < len; i++) {
    napi_value e;
    if (napi_get_element(env, arr, i, &e) != napi_ok || !view(env, e, &(*out)[i])) return false;
  }
  return true;
}

template <typename F>
void parallel(size_t n, uint32_t threads, F body) {
  // ranges are multiples of 64 elements, so every thread but the last runs whole SIMD blocks
  size_t T = threads < 1 ? 1 : threads;
  if (T > 64) T = 64;
  if (n < T * 65536) T = n / 65536 > 0 ? n / 65536 : 1;
  if (T == 1) {
    body(size_t(0), n);
    return;
  }
  size_t per = (n / T + 63) & ~size_t(63);
  std::vector<std::thread> pool;
  for (size_t t = 1; t < T; t++) {
    size_t from = t * per < n ? t * per : n, to = (t + 1) * per < n && t + 1 < T ? (t + 1) * per : n;
    pool.emplace_back([=] { body(from, to); });
  }
  body(0, per < n ? per : n);
  for (auto& th : pool) th.join();
}

// merge(dtype, base, deltas[], w: Float64Array, out, n, threads, widen?): with widen, out is float32
napi_value Merge(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 7) return fail(env, "optimer native: merge(dtype, base, deltas, w, out, n, threads, widen?)"), nullptr;
  bool widen = false;
  if (argc >= 8 && napi_get_value_bool(env, argv[7], &widen) != napi_ok) widen = false;
  uint32_t dt, n, threads;
  View base, w, out;
  std::vector<View> d;
  if (!u32(env, argv[0], &dt) || !view(env, argv[1], &base) || !views(env, argv[2], &d) || !view(env, argv[3], &w) ||
      !view(env, argv[4], &out) || !u32(env, argv[5], &n) || !u32(env, argv[6], &threads))
    return nullptr;
  if (dt > BF16) return fail(env, "optimer native: unknown dtype"), nullptr;
  size_t bytes = size_t(n) * kElemBytes[dt];
  if (w.type != napi_float64_array || w.bytes < d.size() * 8) return fail(env, "optimer native: w must be a Float64Array, one per vector"), nullptr;
  if (base.bytes < bytes || out.bytes < (widen ? size_t(n) * 4 : bytes)) return fail(env, "optimer native: a buffer is shorter than n elements"), nullptr;
  const uint8_t* ptrs[kMaxVectors];
  for (size_t k = 0; k < d.size(); k++) {
    if (d[k].bytes < bytes) return fail(env, "optimer native: a delta is shorter than n elements"), nullptr;
    ptrs[k] = d[k].data;
  }
  MergeArgs a{int(dt), base.data, ptrs, reinterpret_cast<const double*>(w.data), d.size(), out.data, widen};
  parallel(n, threads, [&](size_t from, size_t to) { mergeImpl(a, from, to); });
  return nullptr;
}

// delta(dtype, ckpt, base, out, rounded: Float32Array | null, n)
napi_value Delta(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 6) return fail(env, "optimer native: delta(dtype, ckpt, base, out, rounded, n)"), nullptr;
  uint32_t dt, n;
  View c, b, out, r;
  napi_valuetype rt;
  napi_typeof(env, argv[4], &rt);
  bool hasR = rt != napi_null && rt != napi_undefined;
  if (!u32(env, argv[0], &dt) || !view(env, argv[1], &c) || !view(env, argv[2], &b) || !view(env, argv[3], &out) ||
      (hasR && !view(env, argv[4], &r)) || !u32(env, argv[5], &n))
    return nullptr;
  if (dt > BF16) return fail(env, "optimer native: unknown dtype"), nullptr;
  size_t bytes = size_t(n) * kElemBytes[dt];
  if (c.bytes < bytes || b.bytes < bytes || out.bytes < bytes || (hasR && (r.type != napi_float32_array || r.bytes < size_t(n) * 4)))
    return fail(env, "optimer native: a buffer is shorter than n elements"), nullptr;
  deltaImpl(int(dt), c.data, b.data, out.data, hasR ? reinterpret_cast<float*>(r.data) : nullptr, 0, n);
  return nullptr;
}

// dots(vectors: Float32Array[], n, lanes: Float64Array(K*K*8)): adds each pair's (p ≤ q) products to its eight lanes
napi_value Dots(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 3) return fail(env, "optimer native: dots(vectors, n, lanes)"), nullptr;
  std::vector<View> v;
  uint32_t n;
  View lanes;
  if (!views(env, argv[0], &v) || !u32(env, argv[1], &n) || !view(env, argv[2], &lanes)) return nullptr;
  size_t K = v.size();
  if (lanes.type != napi_float64_array || lanes.bytes < K * K * 8 * 8) return fail(env, "optimer native: lanes must be a Float64Array of K*K*8"), nullptr;
  const float* ptrs[kMaxVectors];
  for (size_t k = 0; k < K; k++) {
    if (v[k].type != napi_float32_array || v[k].bytes < size_t(n) * 4) return fail(env, "optimer native: vectors must be Float32Arrays of n"), nullptr;
    ptrs[k] = reinterpret_cast<const float*>(v[k].data);
  }
  dotsImpl(ptrs, K, n, reinterpret_cast<double*>(lanes.data));
  return nullptr;
}


// ---- SHA-256 with the SHA extensions (SHA-NI): the pool build hashes every shard twice (its name and its pieces)
// over the same bytes, so one call advances several states over the same 64-byte blocks (one message schedule,
// the chains interleaved: sha256rnds2's latency, not its throughput, bounds one chain), and can take two buffers
// at once (four chains). Only the compression function is here; padding and pieces are shared/pool/sha256-multi.ts.
#if OPTIMER_X86
#define SHANI __attribute__((target("sha,sse4.1,ssse3")))
alignas(16) const uint32_t kSha256K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// D buffers of `blocks` 64-byte blocks; buffer d advances the C states st[d·C .. d·C + C) (each a, b, …, h)
template <int D, int C>
SHANI void sha256Blocks(uint32_t* const* st, const uint8_t* const* data, size_t blocks) {
  const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i s0[D * C], s1[D * C];
  for (int j = 0; j < D * C; j++) {
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(st[j])), 0xB1);
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(st[j] + 4)), 0x1B);
    s0[j] = _mm_alignr_epi8(t, u, 8);     // ABEF
    s1[j] = _mm_blend_epi16(u, t, 0xF0);  // CDGH
  }
  for (size_t b = 0; b < blocks; b++) {
    __m128i a0[D * C], a1[D * C], M[D][4];
    for (int j = 0; j < D * C; j++) a0[j] = s0[j], a1[j] = s1[j];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
      for (int d = 0; d < D; d++) {
        if (i < 4) {
          M[d][i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data[d] + b * 64 + 16 * i)), MASK);
        } else {
          __m128i w = _mm_sha256msg1_epu32(M[d][i & 3], M[d][(i + 1) & 3]);
          w = _mm_add_epi32(w, _mm_alignr_epi8(M[d][(i + 3) & 3], M[d][(i + 2) & 3], 4));
          M[d][i & 3] = _mm_sha256msg2_epu32(w, M[d][(i + 3) & 3]);
        }
      }
      const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(&kSha256K[4 * i]));
      __m128i x[D], y[D];
      for (int d = 0; d < D; d++) x[d] = _mm_add_epi32(M[d][i & 3], k), y[d] = _mm_shuffle_epi32(x[d], 0x0E);
      for (int j = 0; j < D * C; j++) s1[j] = _mm_sha256rnds2_epu32(s1[j], s0[j], x[j / C]);
      for (int j = 0; j < D * C; j++) s0[j] = _mm_sha256rnds2_epu32(s0[j], s1[j], y[j / C]);
    }
    for (int j = 0; j < D * C; j++) s0[j] = _mm_add_epi32(s0[j], a0[j]), s1[j] = _mm_add_epi32(s1[j], a1[j]);
  }
  for (int j = 0; j < D * C; j++) {
    __m128i t = _mm_shuffle_epi32(s0[j], 0x1B), u = _mm_shuffle_epi32(s1[j], 0xB1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(st[j]), _mm_blend_epi16(t, u, 0xF0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(st[j] + 4), _mm_alignr_epi8(u, t, 8));
  }
}

bool hasShaNi() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (b >> 29) & 1;
}
#endif

// sha256Blocks(states: Uint32Array, data: Uint8Array[]): every buffer the same length, a multiple of 64 bytes;
// states holds C ∈ {1, 2} states of eight words per buffer (buffer d's at 8·C·d), each advanced over its blocks
napi_value Sha256Blocks(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2) return fail(env, "optimer native: sha256Blocks(states, data)"), nullptr;
  View states;
  std::vector<View> d;
  if (!view(env, argv[0], &states) || !views(env, argv[1], &d)) return nullptr;
  size_t D = d.size();
  if (D == 0) return nullptr;
  size_t len = d[0].bytes;
  for (auto& v : d)
    if (v.bytes != len || len % 64 != 0) return fail(env, "optimer native: sha256Blocks takes buffers of one length, a multiple of 64 bytes"), nullptr;
  if (states.type != napi_uint32_array || (states.bytes != D * 32 && states.bytes != D * 64))
    return fail(env, "optimer native: sha256Blocks takes a Uint32Array of 8 or 16 words per buffer"), nullptr;
#if OPTIMER_X86
  size_t C = states.bytes / (D * 32);
  uint32_t* st[2 * kMaxVectors];
  const uint8_t* ptrs[kMaxVectors];
  for (size_t j = 0; j < D * C; j++) st[j] = reinterpret_cast<uint32_t*>(states.data) + 8 * j;
  for (size_t k = 0; k < D; k++) ptrs[k] = d[k].data;
  size_t k = 0, blocks = len / 64;
  for (; k + 2 <= D; k += 2) {
    if (C == 2) sha256Blocks<2, 2>(st + 2 * k, ptrs + k, blocks);
    else sha256Blocks<2, 1>(st + k, ptrs + k, blocks);
  }
  if (k < D) {
    if (C == 2) sha256Blocks<1, 2>(st + 2 * k, ptrs + k, blocks);
    else sha256Blocks<1, 1>(st + k, ptrs + k, blocks);
  }
#endif
  return nullptr;
}

#if OPTIMER_MMAP
// ---- file mappings: the merge reads page-cached shards in place instead of copying them through read() ----
//
// mapFile(path) → ArrayBuffer over a private, copy-on-write mapping of the whole file (a stray write changes this
// process's copy, never the file); unmapFile(ab) detaches it and unmaps now. A mapping never unmapped is unmapped
// when its ArrayBuffer is collected. Each mapping has its own record (the finalizer's hint), so a finalizer that
// runs after an explicit unmap, when the address may belong to a newer mapping, touches nothing.

struct Mapping {
  void* data;
  size_t bytes;
  bool live;
};
std::mutex mappingsLock;
std::unordered_map<void*, Mapping*> mappings;  // live mappings by address

void finalizeMapping(napi_env, void*, void* hint) {
  auto* m = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> g(mappingsLock);
    if (m->live) {
      munmap(m->data, m->bytes);
      mappings.erase(m->data);
    }
  }
  delete m;
}

napi_value MapFile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char path[4096];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len + 1 >= sizeof path)
    return fail(env, "optimer native: mapFile(path) takes a path string"), nullptr;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, strerror(errno)), nullptr;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return fail(env, strerror(e)), nullptr;
  }
  napi_value ab;
  size_t bytes = size_t(st.st_size);
  if (bytes == 0) {  // mmap refuses a length of 0
    close(fd);
    void* none;
    napi_create_arraybuffer(env, 0, &none, &ab);
    return ab;
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return fail(env, strerror(e)), nullptr;
  auto* m = new Mapping{p, bytes, true};
  {
    std::lock_guard<std::mutex> g(mappingsLock);
    mappings[p] = m;
  }
  if (napi_create_external_arraybuffer(env, p, bytes, finalizeMapping, m, &ab) != napi_ok) {
    {
      std::lock_guard<std::mutex> g(mappingsLock);
      mappings.erase(p);
    }
    munmap(p, bytes);
    delete m;
    return fail(env, "optimer native: cannot wrap a mapping in an ArrayBuffer"), nullptr;
  }
  return ab;
}

napi_value UnmapFile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  size_t bytes = 0;
  if (argc < 1 || napi_get_arraybuffer_info(env, argv[0], &data, &bytes) != napi_ok)
    return fail(env, "optimer native: unmapFile(ab) takes an ArrayBuffer from mapFile"), nullptr;
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> g(mappingsLock);
    auto it = mappings.find(data);
    if (it == mappings.end()) return nullptr;  // not a mapping, or unmapped already
    m = it->second;
    mappings.erase(it);
    m->live = false;  // the finalizer, whenever it runs (perhaps inside the detach below), only frees the record
  }
  // detached first: no JavaScript view can reach the pages once they are gone (it sees a length of 0)
  napi_detach_arraybuffer(env, argv[0]);
  munmap(data, bytes);
  return nullptr;
}
#endif

void method(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn);
  napi_set_named_property(env, exports, name, fn);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  static std::once_flag once;  // one choice per process, whichever worker thread loads the addon first
  std::call_once(once, choose);
  method(env, exports, "merge", Merge);
  method(env, exports, "delta", Delta);
  method(env, exports, "dots", Dots);
#if OPTIMER_MMAP
  method(env, exports, "mapFile", MapFile);
  method(env, exports, "unmapFile", UnmapFile);
#endif
#if OPTIMER_X86
  // only where the CPU has the SHA extensions: elsewhere the pool build hashes with node:crypto (the same digests)
  if (hasShaNi()) method(env, exports, "sha256Blocks", Sha256Blocks);
#endif
  napi_value s;
  napi_create_string_utf8(env, simdName, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, exports, "simd", s);
  napi_value version;  // 2: merge takes `widen`; an older build ignores it, so callers check this first
  napi_create_uint32(env, 2, &version);
  napi_set_named_property(env, exports, "version", version);
  napi_value hw;
  napi_create_uint32(env, std::thread::hardware_concurrency(), &hw);
  napi_set_named_property(env, exports, "hardwareThreads", hw);
  return exports;
}
