// The exact top-k frame of one logits row (pure C++, no Node or llama.cpp dependency).
//
// frame(logits, n, k, ids, logprobs) -> tail mass
//   pass 1: max logit (vectorised);
//   pass 2: total = sum of e^(x - max) over the row, float32 terms, double accumulation;
//   pass 3: the k best (logit desc, id asc) with a size-k min-heap, blocks of 8 logits that
//           cannot enter the heap are skipped with one vector comparison;
//   logprob_i = logit_i - (max + log total)  (double, stored as float32, clamped at -64),
//   tail = (total - sum of the k listed terms) / total, the listed terms computed by the very
//   same vector code, so the tail is the mass of the other ids up to double rounding.
// Returns -2 when the row has NaN or +inf (the caller then uses its fallback).
// With target in [0, n) and targetLp != nullptr, also *targetLp = logit[target] - logsumexp
// (teacher forcing: the exact logprob of a known next token, not clamped).
//
// logprobOf(logits, n, target) -> logit[target] - logsumexp alone (passes 1 and 2 only), NaN
// when the row has NaN or +inf (prompt scoring: one exact logprob per prompt position).
//
// GCC/Clang vector extensions (SSE2 / NEON); on x86-64 an AVX2+FMA copy of the same code is
// picked at runtime when the CPU has it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if !defined(__GNUC__)
#error "meshllm_native needs GCC or Clang (vector extensions)"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace meshllm {

#define MESHLLM_INLINE inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));

/** W float lanes: W = 4 (SSE2 / NEON registers), W = 8 (AVX2 registers) */
template <int W> struct Vec;
template <> struct Vec<4> { typedef v4f F; typedef v4i I; typedef v2d D; typedef v2f H; };
template <> struct Vec<8> { typedef v8f F; typedef v8i I; typedef v4d D; typedef v4f H; };

/**
 * e^x for x <= 0 (x = logit - max logit), float32-accurate (Cephes expf polynomial, relative
 * error < 1e-7); exactly 0 below -87 (e^-87 < 2e-38, far below the float32 resolution of a sum
 * that is >= 1), so -inf logits contribute 0. NaN stays NaN.
 */
template <int W>
MESHLLM_INLINE typename Vec<W>::F expNeg (typename Vec<W>::F x) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::I I;
  const F zero = {};
  const F lo = zero - 87.0f;
  const I under = x < lo;
  const F xc = under ? lo : x;
  // n = round(xc * log2 e) by the 1.5 * 2^23 trick; its integer is in the low mantissa bits
  const F shifter = zero + 12582912.0f;
  const F t = xc * 1.44269504088896341f + shifter;
  const F n = t - shifter;
  const I ni = (I)t - 0x4B400000;
  F r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const F scale = (F)((ni + 127) << 23);  // 2^n, n in [-126, 0]
  const F y = p * scale;
  return under ? zero : y;
}

template <int W>
MESHLLM_INLINE typename Vec<W>::D widenLow (typename Vec<W>::F e) {
  typename Vec<W>::H h;
  for (int j = 0; j < W / 2; j++) h[j] = e[j];
  return __builtin_convertvector(h, typename Vec<W>::D);
}
template <int W>
MESHLLM_INLINE typename Vec<W>::D widenHigh (typename Vec<W>::F e) {
  typename Vec<W>::H h;
  for (int j = 0; j < W / 2; j++) h[j] = e[W / 2 + j];
  return __builtin_convertvector(h, typename Vec<W>::D);
}

template <int W>
MESHLLM_INLINE typename Vec<W>::F load (const float* p) { typename Vec<W>::F v; memcpy(&v, p, sizeof v); return v; }

/** the last count < W values, padded with -inf (whose term is exactly 0) */
template <int W>
MESHLLM_INLINE typename Vec<W>::F loadPartial (const float* p, int32_t count) {
  float buf[W];
  for (int j = 0; j < W; j++) buf[j] = j < count ? p[j] : -INFINITY;
  return load<W>(buf);
}

/** sum of e^(x - mx) over x[0..n), float32 terms, double accumulation */
template <int W>
MESHLLM_INLINE double sumExpNeg (const float* x, int32_t n, float mx) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::D D;
  D acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  int32_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const F ea = expNeg<W>(load<W>(x + i) - mx);
    const F eb = expNeg<W>(load<W>(x + i + W) - mx);
    acc0 += widenLow<W>(ea);
    acc1 += widenHigh<W>(ea);
    acc2 += widenLow<W>(eb);
    acc3 += widenHigh<W>(eb);
  }
  for (; i < n; i += W) {
    const F e = expNeg<W>((n - i >= W ? load<W>(x + i) : loadPartial<W>(x + i, n - i)) - mx);
    acc0 += widenLow<W>(e);
    acc1 += widenHigh<W>(e);
  }
  const D acc = (acc0 + acc1) + (acc2 + acc3);
  double total = 0;
  for (int j = 0; j < W / 2; j++) total += acc[j];
  return total;
}

template <int W>
MESHLLM_INLINE float maxOf (const float* x, int32_t n) {
  typedef typename Vec<W>::F F;
  const F zero = {};
  F m0 = zero - INFINITY, m1 = m0;
  int32_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const F a = load<W>(x + i);
    const F b = load<W>(x + i + W);
    m0 = a > m0 ? a : m0;  // NaN never wins a comparison
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  float mx = -INFINITY;
  for (int j = 0; j < W; j++) mx = m0[j] > mx ? m0[j] : mx;
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

struct Entry { float logit; int32_t id; };
/** "a is better than b": higher logit, then lower id */
MESHLLM_INLINE bool better (const Entry& a, const Entry& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/** min-heap on `better`: the root is the worst kept entry */
inline void siftDown (Entry* h, int n, int i) {
  for (;;) {
    int w = i;
    const int l = 2 * i + 1;
    const int r = l + 1;
    if (l < n && better(h[w], h[l])) w = l;
    if (r < n && better(h[w], h[r])) w = r;
    if (w == i) return;
    std::swap(h[i], h[w]);
    i = w;
  }
}

MESHLLM_INLINE void offer (Entry* heap, int filled, float& floor, float x, int32_t id) {
  // ids ascend, so an entry equal to the root is worse (higher id): strictly greater only
  if (x > floor) {
    heap[0] = Entry{ x, id };
    siftDown(heap, filled, 0);
    floor = heap[0].logit;
  }
}

/** k in [1, 256], k <= n */
template <int W>
MESHLLM_INLINE double frameImpl (const float* logits, int32_t n, int k, uint32_t* ids, float* logprobs, int32_t target, double* targetLp) {
  const float mx = maxOf<W>(logits, n);
  if (!std::isfinite(mx)) return -2;
  const double total = sumExpNeg<W>(logits, n, mx);
  if (!std::isfinite(total) || total < 1.0) return -2;  // NaN or +inf somewhere

  Entry heap[256];
  int filled = 0;
  int32_t i = 0;
  for (; i < n && filled < k; i++) heap[filled++] = Entry{ logits[i], i };
  for (int j = filled / 2 - 1; j >= 0; j--) siftDown(heap, filled, j);
  float floor = heap[0].logit;
  for (; i + 2 * W <= n; i += 2 * W) {
    const typename Vec<W>::I hit = (load<W>(logits + i) > floor) | (load<W>(logits + i + W) > floor);
    int32_t any = 0;
    for (int j = 0; j < W; j++) any |= hit[j];
    if (any == 0) continue;
    for (int j = 0; j < 2 * W; j++) offer(heap, filled, floor, logits[i + j], i + j);
  }
  for (; i < n; i++) offer(heap, filled, floor, logits[i], i);
  std::sort(heap, heap + filled, better);

  const double lse = static_cast<double>(mx) + std::log(total);
  if (targetLp != nullptr && target >= 0 && target < n) *targetLp = static_cast<double>(logits[target]) - lse;
  float listedLogits[256];
  for (int j = 0; j < filled; j++) {
    listedLogits[j] = heap[j].logit;
    ids[j] = static_cast<uint32_t>(heap[j].id);
    const double lp = static_cast<double>(heap[j].logit) - lse;
    logprobs[j] = static_cast<float>(lp < -64 ? -64 : lp);
  }
  const double listed = sumExpNeg<W>(listedLogits, filled, mx);
  double tail = (total - listed) / total;
  if (tail < 0) tail = 0;
  if (tail > 1) tail = 1;
  return tail;
}

/** logit[target] - logsumexp over the row; NaN for NaN / +inf in the row */
template <int W>
MESHLLM_INLINE double logprobImpl (const float* logits, int32_t n, int32_t target) {
  const float mx = maxOf<W>(logits, n);
  if (!std::isfinite(mx)) return NAN;
  const double total = sumExpNeg<W>(logits, n, mx);
  if (!std::isfinite(total) || total < 1.0) return NAN;
  return static_cast<double>(logits[target]) - (static_cast<double>(mx) + std::log(total));
}

#if defined(__x86_64__) && !defined(__AVX2__)
#define MESHLLM_AVX2_DISPATCH 1
__attribute__((target("avx2,fma"))) inline double frameAvx2 (const float* logits, int32_t n, int k, uint32_t* ids, float* logprobs, int32_t target, double* targetLp) {
  return frameImpl<8>(logits, n, k, ids, logprobs, target, targetLp);
}
__attribute__((target("avx2,fma"))) inline double logprobAvx2 (const float* logits, int32_t n, int32_t target) {
  return logprobImpl<8>(logits, n, target);
}
#endif

/** which code path frame() takes on this CPU */
inline const char* frameVariant () {
#ifdef MESHLLM_AVX2_DISPATCH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2 ? "avx2+fma" : "sse2";
#else
  return "generic";
#endif
}

/**
 * forceGeneric: the 4-lane code even where AVX2 is available (tests). target / targetLp:
 * see the top of this file (target < 0 or targetLp == nullptr: not computed).
 */
inline double frame (const float* logits, int32_t n, int k, uint32_t* ids, float* logprobs, bool forceGeneric = false,
                     int32_t target = -1, double* targetLp = nullptr) {
  if (n <= 0 || k <= 0) return -2;
  if (k > 256) k = 256;
  if (k > n) k = n;
#ifdef MESHLLM_AVX2_DISPATCH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && !forceGeneric) return frameAvx2(logits, n, k, ids, logprobs, target, targetLp);
#else
  (void)forceGeneric;
#endif
  return frameImpl<4>(logits, n, k, ids, logprobs, target, targetLp);
}

/**
 * acc[t] += weight * p(t) for every id t of the row's softmax that is NOT in skip[0..nSkip)
 * (offline estimation of the tail's shape: the mass of the ids a frame does not list).
 * Returns the row's tail mass so added, or -2 for NaN / +inf rows (acc untouched).
 */
inline double accumulateUnlisted (const float* logits, int32_t n, const uint32_t* skip, int32_t nSkip, double weight, double* acc) {
  if (n <= 0) return -2;
  const float mx = maxOf<4>(logits, n);
  if (!std::isfinite(mx)) return -2;
  const double total = sumExpNeg<4>(logits, n, mx);
  if (!std::isfinite(total) || total < 1.0) return -2;
  const double lse = static_cast<double>(mx) + std::log(total);
  double added = 0;
  for (int32_t i = 0; i < n; i++) {
    const double p = std::exp(static_cast<double>(logits[i]) - lse);
    acc[i] += weight * p;
    added += p;
  }
  for (int32_t j = 0; j < nSkip; j++) {
    const uint32_t id = skip[j];
    if (id >= static_cast<uint32_t>(n)) continue;
    const double p = std::exp(static_cast<double>(logits[id]) - lse);
    acc[id] -= weight * p;
    added -= p;
  }
  return added < 0 ? 0 : added;
}

/** the exact logprob of `target` (0 <= target < n) in the row's softmax; NaN for NaN / +inf rows */
inline double logprobOf (const float* logits, int32_t n, int32_t target, bool forceGeneric = false) {
  if (n <= 0 || target < 0 || target >= n) return NAN;
#ifdef MESHLLM_AVX2_DISPATCH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && !forceGeneric) return logprobAvx2(logits, n, target);
#else
  (void)forceGeneric;
#endif
  return logprobImpl<4>(logits, n, target);
}

}  // namespace meshllm

#pragma GCC diagnostic pop
