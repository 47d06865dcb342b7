// The exact top-k frame of one logits row (pure C++, no Node or llama.cpp dependency).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace meshllm {

/**
 * e^x for x <= 0 (x - max logit), float32-accurate (Cephes expf polynomial, |rel err| < 2e-7);
 * 0 below -87 (e^-87 < 2e-38, far below float32 resolution of a sum that is >= 1). Written
 * without library calls or branches so that the loop over the vocabulary vectorises.
 */
inline float expNeg (float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  // n = round(xc * log2 e) with the 1.5 * 2^23 trick (no rounding instruction needed)
  const float shifter = 12582912.0f;
  const float t = xc * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  int32_t tb;
  memcpy(&tb, &t, 4);
  const int32_t ni = tb - 0x4B400000;  // bits of the shifter
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t eb = (ni + 127) << 23;
  float scale;
  memcpy(&scale, &eb, 4);
  const float y = p * scale;
  return x < -87.0f ? 0.0f : y;
}

#if defined(__GNUC__)
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

/** expNeg on 8 lanes with GCC/Clang vector extensions (SSE2/NEON at least; same arithmetic) */
inline v8f expNeg8 (v8f x) {
  const v8f lo = x - x - 87.0f;  // broadcast without intrinsics
  const v8i under = x < lo;
  const v8f xc = under ? lo : x;
  const v8f shifter = lo * 0.0f + 12582912.0f;
  const v8f t = xc * 1.44269504088896341f + shifter;
  const v8f n = t - shifter;
  const v8i ni = (v8i)t - 0x4B400000;
  v8f r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v8f scale = (v8f)((ni + 127) << 23);
  const v8f y = p * scale;
  return under ? lo * 0.0f : y;
}

/** sum over the row of e^(x - mx): float terms, double accumulation */
inline double sumExpNeg (const float* x, int32_t n, float mx) {
  v4d acc0 = { 0, 0, 0, 0 };
  v4d acc1 = { 0, 0, 0, 0 };
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v;
    memcpy(&v, x + i, sizeof v);
    const v8f e = expNeg8(v - mx);
    const v4f a = { e[0], e[1], e[2], e[3] };
    const v4f b = { e[4], e[5], e[6], e[7] };
    acc0 += __builtin_convertvector(a, v4d);
    acc1 += __builtin_convertvector(b, v4d);
  }
  double total = 0;
  for (; i < n; i++) total += expNeg(x[i] - mx);
  const v4d acc = acc0 + acc1;
  return total + acc[0] + acc[1] + acc[2] + acc[3];
}
#else
inline double sumExpNeg (const float* x, int32_t n, float mx) {
  double sums[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; j++) sums[j] += expNeg(x[i + j] - mx);
  }
  double total = 0;
  for (; i < n; i++) total += expNeg(x[i] - mx);
  for (int j = 0; j < 8; j++) total += sums[j];
  return total;
}
#endif

struct Entry { float logit; int32_t id; };
// "a is better than b": higher logit, then lower id
inline bool better (const Entry& a, const Entry& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// min-heap on `better`: the root is the worst kept entry
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

/**
 * Returns the tail mass (>= 0) or -2 for non-finite logits. k <= n.
 */
inline double frame (const float* logits, int32_t n, int k, uint32_t* ids, float* logprobs) {
  // pass 1: max (8 lanes, vectorisable; NaN never wins a comparison)
  float lanes[8];
  for (int j = 0; j < 8; j++) lanes[j] = -INFINITY;
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; j++) lanes[j] = logits[i + j] > lanes[j] ? logits[i + j] : lanes[j];
  }
  float mx = -INFINITY;
  for (int j = 0; j < 8; j++) mx = lanes[j] > mx ? lanes[j] : mx;
  for (; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
  if (!std::isfinite(mx)) return -2;

  // pass 2: sum of e^(x - max), float terms, double accumulation
  double total = sumExpNeg(logits, n, mx);
  if (!std::isfinite(total) || total < 1.0) return -2;  // NaN or +inf somewhere

  // pass 3: top k by (logit desc, id asc) with a size-k min-heap; ids ascend, so a new
  // entry must be strictly greater than the root to beat it
  Entry heap[256];
  int filled = 0;
  for (i = 0; i < n && filled < k; i++) heap[filled++] = Entry{ logits[i], i };
  for (int j = filled / 2 - 1; j >= 0; j--) siftDown(heap, filled, j);
  float floor = heap[0].logit;
  for (; i < n; i++) {
    const float x = logits[i];
    if (x > floor) {
      heap[0] = Entry{ x, i };
      siftDown(heap, filled, 0);
      floor = heap[0].logit;
    }
  }
  std::sort(heap, heap + filled, better);

  const double lse = static_cast<double>(mx) + std::log(total);
  double listed = 0;
  for (int j = 0; j < filled; j++) {
    listed += expNeg(heap[j].logit - mx);  // same terms as the total: tail = the rest, exactly
    ids[j] = static_cast<uint32_t>(heap[j].id);
    const double lp = static_cast<double>(heap[j].logit) - lse;
    logprobs[j] = static_cast<float>(lp < -64 ? -64 : lp);
  }
  double tail = (total - listed) / total;
  if (tail < 0) tail = 0;
  if (tail > 1) tail = 1;
  return tail;
}

}  // namespace meshllm
