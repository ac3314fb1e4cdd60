// Reader for torch.save'd state dicts (see state_dict.h for why we do not use torch::pickle_load).
#include <featlearn/io/state_dict.h>

#include "pickle.h"

#include <featlearn/common/error.h>

#include <caffe2/serialize/inline_container.h>
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

namespace featlearn {
namespace {

using pickle::FormatError;
using pickle::kind_name;
using pickle::make;
using pickle::PV;
using pickle::PVal;
using pickle::StorageRef;

bool storage_dtype(const std::string& global, at::ScalarType* out) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},     {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool}};
  auto it = kTypes.find(global);
  if (it == kTypes.end()) return false;
  *out = it->second;
  return true;
}

std::vector<int64_t> int_tuple(const PV& v, const char* what) {
  if (v->kind != PVal::kTuple) throw FormatError(std::string("tensor ") + what + " is not a tuple");
  std::vector<int64_t> out;
  for (const auto& x : v->items) {
    if (x->kind != PVal::kInt) throw FormatError(std::string("tensor ") + what + " holds a non-integer");
    out.push_back(x->i);
  }
  return out;
}

// The globals of a torch.save'd state dict: collections.OrderedDict, torch._utils._rebuild_tensor_v2 /
// _rebuild_tensor / _rebuild_parameter; storages come as persistent ids.
class TorchGlobals : public pickle::PickleGlobals {
 public:
  using PersistentLoad = std::function<PV(const PV& pid)>;
  explicit TorchGlobals(PersistentLoad pl) : persistent_load_(std::move(pl)) {}

  PV persistent_load(const PV& pid) override { return persistent_load_(pid); }

  // OrderedDict's __dict__ (the _metadata attribute) is not needed.
  void build(const PV& obj, const PV& /*state*/) override {
    if (obj->kind != PVal::kDict) throw FormatError(std::string("BUILD on a ") + kind_name(obj->kind));
  }

  PV reduce(const std::string& fn, const PV& args) override {
    const auto& a = args->items;
    if (fn == "collections.OrderedDict") {
      if (!a.empty()) throw FormatError("OrderedDict with arguments is not supported");
      return make(PVal::kDict);
    }
    if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (a.size() < 4) throw FormatError(fn + " with " + std::to_string(a.size()) + " arguments");
      if (a[0]->kind != PVal::kStorage || a[1]->kind != PVal::kInt) throw FormatError(fn + ": bad storage arguments");
      auto t = make(PVal::kTensor);
      t->storage = a[0]->storage;
      t->tensor_offset = a[1]->i;
      t->sizes = int_tuple(a[2], "size");
      t->strides = int_tuple(a[3], "stride");
      if (t->sizes.size() != t->strides.size()) throw FormatError("tensor size and stride have different ranks");
      return t;
    }
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != PVal::kTensor) throw FormatError(fn + " without a tensor");
      return a[0];
    }
    throw FormatError("unsupported pickle global '" + fn + "' (only state dicts of tensors can be read)");
  }

 private:
  PersistentLoad persistent_load_;
};

// Builds the tensors once every root storage is filled.
torch::Tensor materialize(const PVal& t, const std::map<std::string, torch::Tensor>& roots) {
  auto it = roots.find(t.storage.key);
  if (it == roots.end()) throw FormatError("storage '" + t.storage.key + "' has no data");
  const torch::Tensor& root = it->second;
  if (root.scalar_type() != t.storage.dtype)
    throw FormatError("storage '" + t.storage.key + "' is used with two dtypes");
  // numel, and the largest element index the view reads (relative to its storage); sizes, strides and offsets
  // come from the file, so every step is checked for overflow.
  int64_t numel = 1, nonzero = 1, last = t.tensor_offset;
  bool overflow = t.tensor_offset < 0 || t.storage.offset < 0;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) throw FormatError("negative tensor size or stride");
    numel = t.sizes[d] == 0 ? 0 : numel;
    if (t.sizes[d] == 0) continue;
    int64_t span = 0;
    overflow |= __builtin_mul_overflow(nonzero, t.sizes[d], &nonzero);
    overflow |= __builtin_mul_overflow(t.sizes[d] - 1, t.strides[d], &span);
    overflow |= __builtin_add_overflow(last, span, &last);
  }
  if (numel != 0) numel = nonzero;
  int64_t begin = 0, root_last = 0;
  overflow |= __builtin_add_overflow(t.storage.offset, t.tensor_offset, &begin);
  overflow |= __builtin_add_overflow(t.storage.offset, last, &root_last);
  if (overflow) throw FormatError("tensor size, stride or offset out of range (corrupt file?)");
  if (numel > 0 && (root_last >= root.numel() || last >= t.storage.numel))
    throw FormatError("tensor view exceeds its storage '" + t.storage.key + "' (corrupt file?)");
  if (numel == 0) return torch::empty(t.sizes, root.options());
  return root.as_strided(t.sizes, t.strides, begin).clone(at::MemoryFormat::Contiguous);
}

NamedTensors to_named_tensors(const PV& top, const std::map<std::string, torch::Tensor>& roots) {
  if (top->kind != PVal::kDict)
    throw FormatError(std::string("the pickled object is a ") + kind_name(top->kind) + ", not a state dict");
  const PVal* dict = top.get();
  // Unwrap {"state_dict": {...}} / {"model": {...}} checkpoints.
  bool all_tensors = true;
  for (const auto& kv : dict->entries) all_tensors &= kv.second->kind == PVal::kTensor;
  if (!all_tensors) {
    for (const auto& kv : dict->entries)
      if (kv.first->kind == PVal::kStr && (kv.first->s == "state_dict" || kv.first->s == "model") &&
          kv.second->kind == PVal::kDict)
        dict = kv.second.get();
  }
  NamedTensors out;
  for (const auto& kv : dict->entries) {
    if (kv.first->kind != PVal::kStr) throw FormatError("a state dict key is not a string");
    if (kv.second->kind != PVal::kTensor)
      throw FormatError("the value of '" + kv.first->s + "' is a " + kind_name(kv.second->kind) +
                        ", not a tensor (not a state dict?)");
    out.emplace_back(kv.first->s, materialize(*kv.second, roots));
  }
  return out;
}

// torch.save since PyTorch 1.6: a zip archive with data.pkl and data/<key> records.
NamedTensors load_zip(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  if (!reader.hasRecord("data.pkl"))
    throw FormatError("zip archive without data.pkl (a TorchScript model or another zip, not a state dict)");
  auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
  const auto* pkl = static_cast<const uint8_t*>(pkl_ptr.get());

  std::map<std::string, StorageRef> declared;  // key -> dtype/numel from the persistent ids
  auto persistent_load = [&](const PV& pid) -> PV {
    // ('storage', storage_type, key, location, numel)
    if (pid->kind != PVal::kTuple || pid->items.size() != 5 || pid->items[0]->kind != PVal::kStr ||
        pid->items[0]->s != "storage")
      throw FormatError("unsupported persistent id (expected ('storage', type, key, location, numel))");
    const auto& it = pid->items;
    if (it[1]->kind != PVal::kGlobal || it[2]->kind != PVal::kStr || it[4]->kind != PVal::kInt)
      throw FormatError("malformed storage persistent id");
    StorageRef s;
    if (!storage_dtype(it[1]->s, &s.dtype)) throw FormatError("unsupported storage type '" + it[1]->s + "'");
    s.key = it[2]->s;
    s.numel = it[4]->i;
    if (s.numel < 0) throw FormatError("negative storage size");
    auto prev = declared.find(s.key);
    if (prev != declared.end() && (prev->second.dtype != s.dtype || prev->second.numel != s.numel))
      throw FormatError("storage '" + s.key + "' declared twice differently");
    declared[s.key] = s;
    auto v = make(PVal::kStorage);
    v->storage = s;
    return v;
  };
  TorchGlobals globals(persistent_load);
  pickle::Unpickler up(pkl, pkl_size, 0, globals);
  PV top = up.load();

  std::map<std::string, torch::Tensor> roots;
  for (const auto& [key, s] : declared) {
    const std::string rec = "data/" + key;
    if (!reader.hasRecord(rec)) throw FormatError("record " + rec + " is missing");
    auto [ptr, size] = reader.getRecord(rec);
    const size_t need = static_cast<size_t>(s.numel) * c10::elementSize(s.dtype);
    if (size < need)
      throw FormatError("record " + rec + " holds " + std::to_string(size) + " bytes, " + std::to_string(need) +
                        " expected (truncated file?)");
    auto t = torch::empty({s.numel}, torch::TensorOptions().dtype(s.dtype));
    if (need) std::memcpy(t.data_ptr(), ptr.get(), need);
    roots[key] = t;
  }
  return to_named_tensors(top, roots);
}

// torch.save before PyTorch 1.6 (and with _use_new_zipfile_serialization=False): pickles of the magic
// number, protocol version and sys_info, then the object, then the list of storage keys, then for each
// storage an int64 element count and its raw bytes.
NamedTensors load_legacy(const std::vector<uint8_t>& buf) {
  TorchGlobals no_pid([](const PV&) -> PV { throw FormatError("unexpected persistent id in the header"); });
  // The first pickle is the magic number 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 of 10 bytes, STOP).
  static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                   0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  if (buf.size() < sizeof kMagic || std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0)
    throw FormatError("a pickle file, but not one written by torch.save (magic number missing)");
  size_t pos = sizeof kMagic;
  for (int k = 0; k < 2; ++k) {  // protocol version, sys_info
    pickle::Unpickler up(buf.data(), buf.size(), pos, no_pid);
    up.load();
    pos = up.pos();
  }
  std::map<std::string, StorageRef> roots_decl;
  auto persistent_load = [&](const PV& pid) -> PV {
    // ('storage', storage_type, root_key, location, numel, view_metadata)
    if (pid->kind != PVal::kTuple || pid->items.size() != 6 || pid->items[0]->kind != PVal::kStr)
      throw FormatError("unsupported persistent id in legacy file");
    if (pid->items[0]->s == "module") throw FormatError("a pickled nn.Module, not a state dict");
    const auto& it = pid->items;
    if (it[0]->s != "storage" || it[1]->kind != PVal::kGlobal || it[2]->kind != PVal::kStr ||
        it[4]->kind != PVal::kInt)
      throw FormatError("malformed storage persistent id");
    StorageRef root;
    if (!storage_dtype(it[1]->s, &root.dtype)) throw FormatError("unsupported storage type '" + it[1]->s + "'");
    root.key = it[2]->s;
    root.numel = it[4]->i;
    roots_decl[root.key] = root;
    auto v = make(PVal::kStorage);
    v->storage = root;
    if (it[5]->kind == PVal::kTuple) {  // (view_key, offset, view_size)
      const auto& vm = it[5]->items;
      if (vm.size() != 3 || vm[1]->kind != PVal::kInt || vm[2]->kind != PVal::kInt)
        throw FormatError("malformed storage view metadata");
      v->storage.offset = vm[1]->i;
      v->storage.numel = vm[2]->i;
    }
    return v;
  };
  TorchGlobals globals(persistent_load);
  pickle::Unpickler up(buf.data(), buf.size(), pos, globals);
  PV top = up.load();
  pos = up.pos();
  pickle::Unpickler keys_up(buf.data(), buf.size(), pos, no_pid);
  PV keys = keys_up.load();
  pos = keys_up.pos();
  if (keys->kind != PVal::kList) throw FormatError("legacy storage key list missing");
  std::map<std::string, torch::Tensor> roots;
  for (const auto& k : keys->items) {
    if (k->kind != PVal::kStr) throw FormatError("legacy storage key is not a string");
    auto d = roots_decl.find(k->s);
    if (d == roots_decl.end()) throw FormatError("legacy storage '" + k->s + "' was not declared");
    if (buf.size() - pos < 8) throw FormatError("truncated storage data");
    int64_t numel;
    std::memcpy(&numel, buf.data() + pos, 8);
    pos += 8;
    const size_t bytes = static_cast<size_t>(d->second.numel) * c10::elementSize(d->second.dtype);
    if (numel != d->second.numel || buf.size() - pos < bytes) throw FormatError("truncated storage data");
    auto t = torch::empty({d->second.numel}, torch::TensorOptions().dtype(d->second.dtype));
    if (bytes) std::memcpy(t.data_ptr(), buf.data() + pos, bytes);
    pos += bytes;
    roots[k->s] = t;
  }
  return to_named_tensors(top, roots);
}

}  // namespace

NamedTensors load_torch_state_dict(const std::string& path) {
  std::vector<uint8_t> head;
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot open the weights file (does it exist?)");
    head.resize(4);
    f.read(reinterpret_cast<char*>(head.data()), 4);
    head.resize(static_cast<size_t>(f.gcount()));
  }
  const std::string hint =
      " — expected a PyTorch state dict written by torch.save(model.state_dict(), path), e.g. a torchvision "
      ".pth weight file";
  try {
    if (head.size() == 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4)
      return load_zip(path);
    if (!head.empty() && head[0] == 0x80) return load_legacy(pickle::read_file(path));
    throw FormatError("not a PyTorch file (neither a zip archive nor a pickle)");
  } catch (const FormatError& e) {
    throw Error(path + ": " + e.what() + hint);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw Error(path + ": cannot read the archive (" + msg + ")" + hint);
  }
}

}  // namespace featlearn
