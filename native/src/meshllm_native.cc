// meshllm_native: the exact top-k frame of one logits row, read straight from llama.cpp.
//
// node-llama-cpp 3.21 exposes next-token distributions only through its samplers; the
// greedy sampler's `confidence` sorts the whole vocabulary (~4 ms per position). This addon
// reads the logits row of a decoded batch position with llama.cpp's llama_get_logits_ith()
// and computes, in three linear passes over the row:
//   max logit, log-sum-exp over the whole vocabulary (double accumulation),
//   the k most probable ids (k <= 256) with logprob = logit - logsumexp, and the exact tail
//   mass of all other ids.
//
// How it reaches llama.cpp without linking against it:
//   * the llama_context* comes from node-llama-cpp's AddonContext (a Napi::ObjectWrap):
//     napi_unwrap() on its JS object gives the AddonContext*, and the field offsets are
//     taken with offsetof() from node-llama-cpp's own addon headers, compiled against the
//     llama.h of the same llama.cpp release (scripts/build-native.mjs extracts it from
//     node-llama-cpp's gitRelease.bundle);
//   * the llama.cpp functions are looked up with dlsym() through the handle of the very
//     addon that created the context (found with dladdr() on the object's vtable, reopened
//     with RTLD_NOLOAD), which resolves them in the libllama that addon links: the bins
//     folder node-llama-cpp picked (CPU, CUDA, Vulkan...). Nothing is linked at build time.
// probe() checks the layout at runtime (both native pointers are mapped memory whose vtables
// are in the same .node; the AddonContext's AddonModel* is the model's own wrapper; the
// llama_context is mapped memory; llama_n_ctx, llama_get_model and the vocabulary size agree
// with JavaScript) before topk() will touch a context; any mismatch is reported as a reason
// string and the caller falls back to node-llama-cpp's samplers.
//
// Exports:
//   probe(ctxObj, modelObj, expectedContextSize, expectedVocabSize) -> '' | reason
//   topk(ctxObj, batchLogitIndex, ids: Uint32Array, logprobs: Float32Array) -> tail mass,
//        or a negative code: -1 no logits, -2 non-finite logits, -3 context not probed or
//        disposed, -4 bad arguments. Fills min(ids.length, vocab) entries, sorted by logprob
//        descending (ties: lower id first); logprobs are clamped at -64 like the JS path.
//        Optional (teacher forcing): topk(..., target, out: Float64Array) also writes the exact
//        logprob of token `target` (logit - logsumexp, from the same pass, not clamped) to out[0].
//   logprob(ctxObj, batchLogitIndex, target, out: Float64Array) -> 0 and out[0] = the exact
//        logprob of `target` (two passes, no top-k: prompt scoring), or a negative code as above
//   accumulate(ctxObj, batchLogitIndex, skip: Uint32Array, weight, acc: Float64Array) -> tail mass
//        added, or a negative code: acc[t] += weight * p(t) for every id not in skip (offline
//        estimation of the tail's shape, scripts/make-tail-prior.mjs)
//   frameOf(logits: Float32Array, ids, logprobs, generic?, target?, out?) -> the same computation
//        on a JS row (tests; generic = true forces the 4-lane code where AVX2 would be used)
//   logprobOf(logits: Float32Array, target, generic?) -> the exact logprob on a JS row, NaN for
//        a non-finite row (tests)
//   info() -> { library, variant, offsets }   (diagnostics)

#include <node_api.h>

#include <dlfcn.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
#include <algorithm>

#include "frame.h"

// node-llama-cpp's addon headers (only for the field offsets; nothing from them is called)
#include "AddonContext.h"
#include "AddonModel.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static const size_t OFF_CTX_MODEL = offsetof(AddonContext, model);
static const size_t OFF_CTX_CTX = offsetof(AddonContext, ctx);
static const size_t OFF_CTX_LOADED = offsetof(AddonContext, contextLoaded);
static const size_t OFF_CTX_DISPOSED = offsetof(AddonContext, disposed);
static const size_t OFF_CTX_MEM_DISPOSED = offsetof(AddonContext, memoryDisposed);
static const size_t OFF_MODEL_MODEL = offsetof(AddonModel, model);
#pragma GCC diagnostic pop

namespace {

typedef float* (*fn_get_logits_ith)(llama_context*, int32_t);
typedef const llama_model* (*fn_get_model)(const llama_context*);
typedef const llama_vocab* (*fn_model_get_vocab)(const llama_model*);
typedef int32_t (*fn_vocab_n_tokens)(const llama_vocab*);
typedef uint32_t (*fn_n_ctx)(const llama_context*);

struct Api {
  std::string library;  // the node-llama-cpp addon whose libllama these come from
  fn_get_logits_ith get_logits_ith = nullptr;
  fn_get_model get_model = nullptr;
  fn_model_get_vocab model_get_vocab = nullptr;
  fn_vocab_n_tokens vocab_n_tokens = nullptr;
  fn_n_ctx n_ctx = nullptr;
};
static Api apis[8];
static unsigned nApis = 0;
static std::string lastLibrary;

// ---- /proc/self/maps ---------------------------------------------------------------

struct Mapping { uintptr_t lo, hi; bool readable; char path[512]; };

template <typename F>
static void forEachMapping (F f) {
  FILE* fp = fopen("/proc/self/maps", "r");
  if (fp == nullptr) return;
  char line[1024];
  while (fgets(line, sizeof line, fp) != nullptr) {
    Mapping m{};
    unsigned long lo = 0, hi = 0;
    char perms[8] = {0};
    int consumed = 0;
    if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &lo, &hi, perms, &consumed) < 3) continue;
    m.lo = lo; m.hi = hi; m.readable = perms[0] == 'r';
    const char* p = line + consumed;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strcspn(p, "\n");
    if (n >= sizeof m.path) n = sizeof m.path - 1;
    memcpy(m.path, p, n);
    m.path[n] = 0;
    if (f(m)) break;
  }
  fclose(fp);
}

/** true when [p, p + len) lies in readable mappings (adjacent mappings allowed) */
static bool readable (const void* ptr, size_t len) {
  uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t end = p + len;
  if (p == 0 || end < p) return false;
  bool ok = false;
  forEachMapping([&](const Mapping& m) {
    if (m.readable && m.lo <= p && p < m.hi) {
      if (end <= m.hi) { ok = true; return true; }
      p = m.hi;  // continues in the next mapping
    }
    return false;
  });
  return ok;
}

/**
 * The llama.cpp API as seen by the node-llama-cpp addon that created the object whose vtable
 * is at `vptr`: dlsym through that addon's handle (RTLD_NOLOAD: it is loaded already) resolves
 * in the libllama it links, i.e. the bins folder node-llama-cpp picked (CPU, CUDA, Vulkan…).
 */
static const Api* apiFor (const void* vptr, std::string& error) {
  Dl_info di{};
  if (dladdr(vptr, &di) == 0 || di.dli_fname == nullptr) { error = "the context object's vtable is not in a loaded library"; return nullptr; }
  const std::string lib = di.dli_fname;
  if (lib.size() < 5 || lib.compare(lib.size() - 5, 5, ".node") != 0) { error = "the context object does not come from a Node addon (" + lib + ")"; return nullptr; }
  for (unsigned i = 0; i < nApis; i++) if (apis[i].library == lib) return &apis[i];
  if (nApis >= 8) { error = "too many node-llama-cpp addons loaded"; return nullptr; }
  void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) { error = "cannot reopen " + lib; return nullptr; }
  Api a;
  a.library = lib;
  a.get_logits_ith = reinterpret_cast<fn_get_logits_ith>(dlsym(h, "llama_get_logits_ith"));
  a.get_model = reinterpret_cast<fn_get_model>(dlsym(h, "llama_get_model"));
  a.model_get_vocab = reinterpret_cast<fn_model_get_vocab>(dlsym(h, "llama_model_get_vocab"));
  a.vocab_n_tokens = reinterpret_cast<fn_vocab_n_tokens>(dlsym(h, "llama_vocab_n_tokens"));
  a.n_ctx = reinterpret_cast<fn_n_ctx>(dlsym(h, "llama_n_ctx"));
  // the handle is kept: the addon stays loaded for the life of the process anyway
  if (!a.get_logits_ith || !a.get_model || !a.model_get_vocab || !a.vocab_n_tokens || !a.n_ctx) {
    dlclose(h);
    error = "the libllama of " + lib + " does not export the llama.cpp functions needed";
    return nullptr;
  }
  Dl_info li{};
  if (dladdr(reinterpret_cast<void*>(a.get_logits_ith), &li) != 0 && li.dli_fname != nullptr) a.library = std::string(li.dli_fname) + " (via " + lib + ")";
  apis[nApis] = a;
  apis[nApis].library = lib;
  lastLibrary = a.library;
  return &apis[nApis++];
}

// ---- probed contexts ---------------------------------------------------------------

struct Probed { const void* addon; llama_context* lctx; int32_t nVocab; const Api* api; };
static Probed probed[64];
static unsigned nProbed = 0;

template <typename T>
static T field (const void* base, size_t off) {
  T v;
  memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}

/** the llama_context* of a probed, live AddonContext, or nullptr */
static const Probed* liveContext (const void* addon) {
  for (unsigned i = 0; i < nProbed && i < 64; i++) {
    const Probed& p = probed[i];
    if (p.addon != addon) continue;
    if (field<bool>(addon, OFF_CTX_DISPOSED) || field<bool>(addon, OFF_CTX_MEM_DISPOSED) || !field<bool>(addon, OFF_CTX_LOADED)) return nullptr;
    if (field<llama_context*>(addon, OFF_CTX_CTX) != p.lctx) return nullptr;
    return &p;
  }
  return nullptr;
}

// ---- N-API glue --------------------------------------------------------------------

static napi_value str (napi_env env, const std::string& s) {
  napi_value v;
  napi_create_string_utf8(env, s.c_str(), s.size(), &v);
  return v;
}

static napi_value num (napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static napi_value Probe (napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 4) return str(env, "probe: expected 4 arguments");
  void* addonCtx = nullptr;
  void* addonModel = nullptr;
  if (napi_unwrap(env, argv[0], &addonCtx) != napi_ok || addonCtx == nullptr) return str(env, "cannot unwrap the context object");
  if (napi_unwrap(env, argv[1], &addonModel) != napi_ok || addonModel == nullptr) return str(env, "cannot unwrap the model object");
  double expCtx = 0, expVocab = 0;
  napi_get_value_double(env, argv[2], &expCtx);
  napi_get_value_double(env, argv[3], &expVocab);

  // 1. both wrapped pointers are mapped memory of at least the classes' size, and their
  //    vtables live in the same Node addon (node-llama-cpp's llama-addon.node)
  if (!readable(addonCtx, sizeof(AddonContext))) return str(env, "the context object's native pointer is not mapped memory");
  if (!readable(addonModel, sizeof(AddonModel))) return str(env, "the model object's native pointer is not mapped memory");
  std::string error;
  const Api* api = apiFor(field<const void*>(addonCtx, 0), error);
  if (api == nullptr) return str(env, error);
  Dl_info mi{};
  if (dladdr(field<const void*>(addonModel, 0), &mi) == 0 || mi.dli_fname == nullptr || api->library != mi.dli_fname) return str(env, "the model object does not come from the context's addon");
  // 2. the context's first field must point at the model's own wrapper (checks the
  //    ObjectWrap base size without dereferencing anything unknown)
  if (field<const void*>(addonCtx, OFF_CTX_MODEL) != addonModel) return str(env, "layout mismatch: AddonContext.model is not the model's AddonModel");
  if (field<bool>(addonCtx, OFF_CTX_DISPOSED) || field<bool>(addonCtx, OFF_CTX_MEM_DISPOSED) || !field<bool>(addonCtx, OFF_CTX_LOADED)) return str(env, "context is not loaded or already disposed");
  llama_context* lctx = field<llama_context*>(addonCtx, OFF_CTX_CTX);
  const llama_model* lmodel = field<const llama_model*>(addonModel, OFF_MODEL_MODEL);
  if (lctx == nullptr || (reinterpret_cast<uintptr_t>(lctx) & 7) != 0 || !readable(lctx, 256)) return str(env, "layout mismatch: AddonContext.ctx is not a mapped pointer");
  if (lmodel == nullptr || (reinterpret_cast<uintptr_t>(lmodel) & 7) != 0 || !readable(lmodel, 256)) return str(env, "layout mismatch: AddonModel.model is not a mapped pointer");
  // 3. llama.cpp agrees with JavaScript about this context
  const uint32_t nCtx = api->n_ctx(lctx);
  if (static_cast<double>(nCtx) != expCtx) return str(env, "layout mismatch: llama_n_ctx is " + std::to_string(nCtx) + ", expected " + std::to_string(static_cast<long long>(expCtx)));
  if (api->get_model(lctx) != lmodel) return str(env, "layout mismatch: llama_get_model(ctx) is not the AddonModel's model");
  const int32_t nVocab = api->vocab_n_tokens(api->model_get_vocab(lmodel));
  if (static_cast<double>(nVocab) != expVocab || nVocab <= 0) return str(env, "vocabulary size " + std::to_string(nVocab) + ", expected " + std::to_string(static_cast<long long>(expVocab)));

  for (unsigned i = 0; i < nProbed && i < 64; i++) {
    if (probed[i].addon == addonCtx) { probed[i] = Probed{ addonCtx, lctx, nVocab, api }; return str(env, ""); }
  }
  probed[nProbed % 64] = Probed{ addonCtx, lctx, nVocab, api };
  nProbed++;
  return str(env, "");
}

static bool floatArray (napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) != napi_ok) return false;
  return t == want;
}

/** optional (target, out: Float64Array) arguments at argv[at], argv[at + 1]; false when absent or bad */
static bool targetArgs (napi_env env, size_t argc, napi_value* argv, size_t at, int32_t nVocab, int32_t* target, double** out) {
  if (argc < at + 2) return false;
  napi_valuetype t;
  if (napi_typeof(env, argv[at], &t) != napi_ok || t != napi_number) return false;
  if (napi_get_value_int32(env, argv[at], target) != napi_ok || *target < 0 || *target >= nVocab) return false;
  void* data = nullptr;
  size_t len = 0;
  if (!floatArray(env, argv[at + 1], napi_float64_array, &data, &len) || len < 1) return false;
  *out = static_cast<double*>(data);
  return true;
}

static napi_value TopK (napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 4) return num(env, -4);
  void* addonCtx = nullptr;
  if (napi_unwrap(env, argv[0], &addonCtx) != napi_ok || addonCtx == nullptr) return num(env, -3);
  const Probed* p = liveContext(addonCtx);
  if (p == nullptr) return num(env, -3);
  int32_t index = 0;
  if (napi_get_value_int32(env, argv[1], &index) != napi_ok) return num(env, -4);
  void* idsData = nullptr;
  void* lpData = nullptr;
  size_t idsLen = 0, lpLen = 0;
  if (!floatArray(env, argv[2], napi_uint32_array, &idsData, &idsLen)) return num(env, -4);
  if (!floatArray(env, argv[3], napi_float32_array, &lpData, &lpLen)) return num(env, -4);
  size_t k = std::min(idsLen, lpLen);
  if (k == 0 || k > 256) return num(env, -4);
  if (k > static_cast<size_t>(p->nVocab)) k = static_cast<size_t>(p->nVocab);
  int32_t target = -1;
  double* out = nullptr;
  if (argc > 4 && !targetArgs(env, argc, argv, 4, p->nVocab, &target, &out)) {
    napi_valuetype t;
    if (napi_typeof(env, argv[4], &t) == napi_ok && t != napi_undefined) return num(env, -4);
  }
  const float* logits = p->api->get_logits_ith(p->lctx, index);
  if (logits == nullptr) return num(env, -1);
  if (out != nullptr) out[0] = NAN;
  return num(env, meshllm::frame(logits, p->nVocab, static_cast<int>(k), static_cast<uint32_t*>(idsData), static_cast<float*>(lpData), false, target, out));
}

/** accumulate(ctxObj, batchLogitIndex, skip: Uint32Array, weight, acc: Float64Array) -> tail | negative code */
static napi_value Accumulate (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 5) return num(env, -4);
  void* addonCtx = nullptr;
  if (napi_unwrap(env, argv[0], &addonCtx) != napi_ok || addonCtx == nullptr) return num(env, -3);
  const Probed* p = liveContext(addonCtx);
  if (p == nullptr) return num(env, -3);
  int32_t index = 0;
  if (napi_get_value_int32(env, argv[1], &index) != napi_ok) return num(env, -4);
  void* skipData = nullptr;
  size_t skipLen = 0;
  if (!floatArray(env, argv[2], napi_uint32_array, &skipData, &skipLen) || skipLen > INT32_MAX) return num(env, -4);
  double weight = 0;
  if (napi_get_value_double(env, argv[3], &weight) != napi_ok) return num(env, -4);
  void* accData = nullptr;
  size_t accLen = 0;
  if (!floatArray(env, argv[4], napi_float64_array, &accData, &accLen) || accLen < static_cast<size_t>(p->nVocab)) return num(env, -4);
  const float* logits = p->api->get_logits_ith(p->lctx, index);
  if (logits == nullptr) return num(env, -1);
  return num(env, meshllm::accumulateUnlisted(logits, p->nVocab, static_cast<const uint32_t*>(skipData), static_cast<int32_t>(skipLen), weight, static_cast<double*>(accData)));
}

/** logprob(ctxObj, batchLogitIndex, target, out: Float64Array) -> 0 | negative code */
static napi_value Logprob (napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 4) return num(env, -4);
  void* addonCtx = nullptr;
  if (napi_unwrap(env, argv[0], &addonCtx) != napi_ok || addonCtx == nullptr) return num(env, -3);
  const Probed* p = liveContext(addonCtx);
  if (p == nullptr) return num(env, -3);
  int32_t index = 0;
  if (napi_get_value_int32(env, argv[1], &index) != napi_ok) return num(env, -4);
  int32_t target = -1;
  double* out = nullptr;
  if (!targetArgs(env, argc, argv, 2, p->nVocab, &target, &out)) return num(env, -4);
  const float* logits = p->api->get_logits_ith(p->lctx, index);
  if (logits == nullptr) return num(env, -1);
  const double lp = meshllm::logprobOf(logits, p->nVocab, target);
  out[0] = lp;
  return num(env, std::isnan(lp) ? -2 : 0);
}

/**
 * frameOf(logits: Float32Array, ids, logprobs, generic?: boolean) -> tail | negative: the same
 * computation on a JS row (tests); generic forces the 4-lane code
 */
static napi_value FrameOf (napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 3) return num(env, -4);
  void* rowData = nullptr;
  void* idsData = nullptr;
  void* lpData = nullptr;
  size_t rowLen = 0, idsLen = 0, lpLen = 0;
  if (!floatArray(env, argv[0], napi_float32_array, &rowData, &rowLen)) return num(env, -4);
  if (!floatArray(env, argv[1], napi_uint32_array, &idsData, &idsLen)) return num(env, -4);
  if (!floatArray(env, argv[2], napi_float32_array, &lpData, &lpLen)) return num(env, -4);
  size_t k = std::min(idsLen, lpLen);
  if (rowLen == 0 || rowLen > INT32_MAX || k == 0 || k > 256 || k > rowLen) return num(env, -4);
  bool generic = false;
  if (argc > 3) napi_get_value_bool(env, argv[3], &generic);
  int32_t target = -1;
  double* out = nullptr;
  if (argc > 4 && !targetArgs(env, argc, argv, 4, static_cast<int32_t>(rowLen), &target, &out)) return num(env, -4);
  if (out != nullptr) out[0] = NAN;
  return num(env, meshllm::frame(static_cast<const float*>(rowData), static_cast<int32_t>(rowLen), static_cast<int>(k), static_cast<uint32_t*>(idsData), static_cast<float*>(lpData), generic, target, out));
}

/** logprobOf(logits: Float32Array, target, generic?) -> exact logprob | NaN (tests) */
static napi_value LogprobOf (napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 2) return num(env, NAN);
  void* rowData = nullptr;
  size_t rowLen = 0;
  if (!floatArray(env, argv[0], napi_float32_array, &rowData, &rowLen) || rowLen == 0 || rowLen > INT32_MAX) return num(env, NAN);
  int32_t target = -1;
  if (napi_get_value_int32(env, argv[1], &target) != napi_ok) return num(env, NAN);
  bool generic = false;
  if (argc > 2) napi_get_value_bool(env, argv[2], &generic);
  return num(env, meshllm::logprobOf(static_cast<const float*>(rowData), static_cast<int32_t>(rowLen), target, generic));
}

static napi_value Info (napi_env env, napi_callback_info) {
  napi_value o, offs;
  napi_create_object(env, &o);
  napi_create_object(env, &offs);
  napi_set_named_property(env, o, "library", str(env, lastLibrary));
  napi_set_named_property(env, o, "variant", str(env, meshllm::frameVariant()));
  napi_set_named_property(env, offs, "contextModel", num(env, static_cast<double>(OFF_CTX_MODEL)));
  napi_set_named_property(env, offs, "contextCtx", num(env, static_cast<double>(OFF_CTX_CTX)));
  napi_set_named_property(env, offs, "modelModel", num(env, static_cast<double>(OFF_MODEL_MODEL)));
  napi_set_named_property(env, o, "offsets", offs);
  return o;
}

}  // namespace

NAPI_MODULE_INIT (/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
    { "probe", nullptr, Probe, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "topk", nullptr, TopK, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "frameOf", nullptr, FrameOf, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "logprob", nullptr, Logprob, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "accumulate", nullptr, Accumulate, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "logprobOf", nullptr, LogprobOf, nullptr, nullptr, nullptr, napi_default, nullptr },
    { "info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr }
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
