// Reader for paddle.save'd state dicts (see pdparams.h).
#include <featlearn/io/pdparams.h>

#include "pickle.h"

#include <featlearn/common/error.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

namespace featlearn {
namespace {

using pickle::FormatError;
using pickle::kind_name;
using pickle::make;
using pickle::PV;
using pickle::PVal;

bool is_reconstruct(const std::string& fn) {
  return fn == "numpy.core.multiarray._reconstruct" || fn == "numpy._core.multiarray._reconstruct";
}

// Python 3 bytes pickled with protocol 2 arrive as _codecs.encode(<str of code points < 256>, "latin1"); the
// str is UTF-8 in the pickle.
std::string latin1_from_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      const uint32_t cp = ((c & 0x1Fu) << 6) | (static_cast<uint8_t>(s[++i]) & 0x3Fu);
      if (cp > 0xFF) throw FormatError("_codecs.encode: a character outside latin-1");
      out.push_back(static_cast<char>(cp));
    } else {
      throw FormatError("_codecs.encode: a character outside latin-1");
    }
  }
  return out;
}

// The globals numpy's pickles of arrays use; everything else is refused.
class NumpyGlobals : public pickle::PickleGlobals {
 public:
  PV reduce(const std::string& fn, const PV& args) override {
    const auto& a = args->items;
    if (is_reconstruct(fn)) {  // (numpy.ndarray, (0,), b'b'): an empty array, filled by BUILD
      if (a.size() != 3 || a[0]->kind != PVal::kGlobal || a[0]->s != "numpy.ndarray")
        throw FormatError(fn + " of something other than numpy.ndarray (a numpy subclass such as a masked array?)");
      auto v = make(PVal::kObject);
      v->s = "numpy.ndarray";
      return v;
    }
    if (fn == "numpy.dtype") {  // ("f4", False, True), then BUILD (3, "<", ...)
      if (a.empty() || a[0]->kind != PVal::kStr) throw FormatError("numpy.dtype without a type code");
      auto v = make(PVal::kObject);
      v->s = "numpy.dtype";
      v->items = a;
      return v;
    }
    if (fn == "_codecs.encode") {
      if (a.size() != 2 || a[0]->kind != PVal::kStr || a[1]->kind != PVal::kStr || a[1]->s != "latin1")
        throw FormatError("_codecs.encode is only accepted as (str, 'latin1')");
      auto v = make(PVal::kBytes);
      v->s = latin1_from_utf8(a[0]->s);
      return v;
    }
    if (fn == "__builtin__.bytes" || fn == "builtins.bytes") {  // protocol 2's b'' (an empty array's data)
      if (!a.empty()) throw FormatError(fn + " is only accepted without arguments");
      return make(PVal::kBytes);
    }
    if (fn == "builtins.tuple" || fn == "__builtin__.tuple") {  // paddle's reduce of a Tensor: (name, array)
      if (a.size() != 1 || a[0]->kind != PVal::kTuple) throw FormatError(fn + " of something other than a tuple");
      return a[0];
    }
    throw FormatError("unsupported pickle global '" + fn + "' (only dicts of numpy arrays can be read)");
  }

  void build(const PV& obj, const PV& state) override {
    if (obj->kind != PVal::kObject) throw FormatError(std::string("BUILD on a ") + kind_name(obj->kind));
    if (obj->state) throw FormatError("BUILD applied twice to one " + obj->s);
    if (state->kind != PVal::kTuple) throw FormatError(obj->s + " state is not a tuple");
    obj->state = state;
  }
};

at::ScalarType numpy_dtype(const PVal& dtype) {
  if (dtype.kind != PVal::kObject || dtype.s != "numpy.dtype") throw FormatError("array dtype is not a numpy.dtype");
  if (!dtype.state || dtype.state->items.size() < 2 || dtype.state->items[1]->kind != PVal::kStr)
    throw FormatError("numpy.dtype without its byte order");
  const std::string& code = dtype.items[0]->s;
  const std::string& order = dtype.state->items[1]->s;
  if (order == ">") throw FormatError("big-endian array (dtype >" + code + ") is not supported");
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"f4", at::kFloat}, {"f8", at::kDouble}, {"f2", at::kHalf}, {"i8", at::kLong},  {"i4", at::kInt},
      {"i2", at::kShort}, {"i1", at::kChar},   {"u1", at::kByte}, {"b1", at::kBool}};
  if (!code.empty() && code[0] == 'O') throw FormatError("an array of Python objects (dtype=object), not numbers");
  auto it = kTypes.find(code);
  if (it == kTypes.end())
    throw FormatError("unsupported array dtype '" + code +
                      "' (supported: float32, float64, float16, int64, int32, int16, int8, uint8, bool)");
  return it->second;
}

// A BUILT numpy.ndarray -> tensor. State: ([version,] shape, dtype, fortran_order, raw bytes).
torch::Tensor to_tensor(const PVal& arr, const std::string& key) {
  if (!arr.state) throw FormatError("array '" + key + "' has no data (BUILD missing)");
  std::vector<PV> st = arr.state->items;
  if (st.size() == 5) st.erase(st.begin());  // the version (1)
  if (st.size() != 4) throw FormatError("array '" + key + "' has a malformed state");
  if (st[0]->kind != PVal::kTuple) throw FormatError("array '" + key + "' shape is not a tuple");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (const auto& d : st[0]->items) {
    if (d->kind != PVal::kInt || d->i < 0) throw FormatError("array '" + key + "' has a bad shape");
    shape.push_back(d->i);
    if (__builtin_mul_overflow(numel, d->i, &numel)) throw FormatError("array '" + key + "' is too large");
  }
  const at::ScalarType dtype = numpy_dtype(*st[1]);
  if (st[2]->kind != PVal::kBool) throw FormatError("array '" + key + "' fortran_order flag is not a bool");
  const bool fortran = st[2]->b;
  if (st[3]->kind == PVal::kList)
    throw FormatError("array '" + key + "' holds Python objects (dtype=object), not numbers");
  if (st[3]->kind != PVal::kBytes && st[3]->kind != PVal::kStr)
    throw FormatError("array '" + key + "' data is a " + kind_name(st[3]->kind));
  const std::string& raw = st[3]->s;
  int64_t need = 0;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(c10::elementSize(dtype)), &need))
    throw FormatError("array '" + key + "' is too large");
  if (static_cast<int64_t>(raw.size()) != need)
    throw FormatError("array '" + key + "' holds " + std::to_string(raw.size()) + " bytes, " + std::to_string(need) +
                      " expected for its shape and dtype (corrupt file?)");
  // Fortran order: the bytes are the transpose's C-order bytes.
  std::vector<int64_t> stored(shape);
  if (fortran) std::reverse(stored.begin(), stored.end());
  // numpy bools are bytes (0/1; anything else reads as true): read as uint8 and compare.
  auto t = torch::empty(stored, torch::TensorOptions().dtype(dtype == at::kBool ? at::kByte : dtype));
  if (need) std::memcpy(t.data_ptr(), raw.data(), static_cast<size_t>(need));
  if (dtype == at::kBool) t = t.ne(0);
  if (fortran && t.dim() > 1) {
    std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
    for (int64_t d = 0; d < t.dim(); ++d) perm[static_cast<size_t>(d)] = t.dim() - 1 - d;
    t = t.permute(perm).contiguous();
  }
  return t;
}

NamedTensors to_named_tensors(const PV& top) {
  if (top->kind != PVal::kDict)
    throw FormatError(std::string("the pickled object is a ") + kind_name(top->kind) +
                      ", not a state dict (a dict of parameter name -> array)");
  NamedTensors out;
  for (const auto& [k, v] : top->entries) {
    if (k->kind != PVal::kStr) throw FormatError("a state dict key is not a string");
    if (k->s == "StructuredToParameterName@@") continue;  // names table, not a tensor
    if (k->s == "UnpackBigParamInfor@@")
      throw FormatError("parameters larger than 4 GB split by paddle.save (protocol 2/3) are not supported; "
                        "save with protocol 4");
    PV arr = v;
    if (arr->kind == PVal::kTuple && arr->items.size() == 2 && arr->items[0]->kind == PVal::kStr)
      arr = arr->items[1];  // paddle's (name, array) form of a Tensor
    if (arr->kind != PVal::kObject || arr->s != "numpy.ndarray")
      throw FormatError("the value of '" + k->s + "' is a " +
                        (arr->kind == PVal::kObject ? arr->s : std::string(kind_name(arr->kind))) +
                        ", not an array (not a state dict?)");
    out.emplace_back(k->s, to_tensor(*arr, k->s));
  }
  return out;
}

// torch.save's legacy (non-zip) files start with a pickle of its magic number.
bool has_torch_magic(const uint8_t* p, size_t n) {
  static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46};
  return n >= sizeof kMagic && std::memcmp(p, kMagic, sizeof kMagic) == 0;
}

}  // namespace

bool is_pdparams_file(const std::string& path) {
  const std::string ext = ".pdparams";
  if (path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0) return true;
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  uint8_t head[8] = {};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const auto n = static_cast<size_t>(f.gcount());
  return n >= 2 && head[0] == 0x80 && !has_torch_magic(head, n);
}

NamedTensors load_pdparams(const std::string& path) {
  std::vector<uint8_t> buf;
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot open the weights file (does it exist?)");
  }
  buf = pickle::read_file(path);
  const std::string hint = " — expected a Paddle state dict written by paddle.save(layer.state_dict(), path), "
                           "e.g. a PaddleClas .pdparams weight file";
  try {
    if (buf.size() >= 2 && buf[0] == 'P' && buf[1] == 'K')
      throw FormatError("a zip archive (a PyTorch .pth file? those are read when the name does not end with "
                        ".pdparams)");
    if (buf.empty() || buf[0] != 0x80) throw FormatError("not a pickle (no PROTO opcode at the start)");
    if (has_torch_magic(buf.data(), buf.size())) throw FormatError("a legacy torch.save file, not a Paddle one");
    NumpyGlobals globals;
    pickle::Unpickler up(buf.data(), buf.size(), 0, globals);
    return to_named_tensors(up.load());
  } catch (const FormatError& e) {
    throw Error(path + ": " + e.what() + hint);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw Error(path + ": " + msg.substr(0, msg.find('\n')) + hint);
  }
}

}  // namespace featlearn
