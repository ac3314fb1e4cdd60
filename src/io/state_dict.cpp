// Reader for torch.save'd state dicts (see state_dict.h for why we do not use torch::pickle_load).
#include <featlearn/io/state_dict.h>

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

// Internal parse failure; converted to Error("<file>: ...") at the API boundary.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A storage: `numel` elements of `dtype` starting at element `offset` of the root storage `key`.
struct StorageRef {
  std::string key;
  at::ScalarType dtype = at::kFloat;
  int64_t offset = 0;
  int64_t numel = 0;
};

struct PVal;
using PV = std::shared_ptr<PVal>;

// The pickle values a state dict needs. Tensors stay lazy (storage + geometry) until all storages are read,
// because the legacy format stores the bytes after the pickle.
struct PVal {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor } kind = kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kStr; kGlobal: "module.name"
  std::vector<PV> items;                    // kTuple, kList
  std::vector<std::pair<PV, PV>> entries;   // kDict
  StorageRef storage;                       // kStorage, kTensor
  std::vector<int64_t> sizes, strides;      // kTensor
  int64_t tensor_offset = 0;                // kTensor (elements into `storage`)
};

PV make(PVal::Kind k) {
  auto v = std::make_shared<PVal>();
  v->kind = k;
  return v;
}

const char* kind_name(PVal::Kind k) {
  switch (k) {
    case PVal::kNone: return "None";
    case PVal::kBool: return "bool";
    case PVal::kInt: return "int";
    case PVal::kFloat: return "float";
    case PVal::kStr: return "str";
    case PVal::kTuple: return "tuple";
    case PVal::kList: return "list";
    case PVal::kDict: return "dict";
    case PVal::kGlobal: return "global";
    case PVal::kStorage: return "storage";
    case PVal::kTensor: return "tensor";
  }
  return "?";
}

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

// Interprets one pickle (up to STOP) from `data[pos...]`. Only whitelisted globals are accepted.
class Unpickler {
 public:
  using PersistentLoad = std::function<PV(const PV& pid)>;
  Unpickler(const uint8_t* data, size_t size, size_t pos, PersistentLoad pl)
      : d_(data), n_(size), pos_(pos), persistent_load_(std::move(pl)) {}
  // The memo lets a pickle put a container into itself (or nest containers deeply): the links are cut here,
  // so values form no reference cycles (leaks) and are not destroyed recursively.
  ~Unpickler() {
    for (const auto& c : containers_) {
      c->items.clear();
      c->entries.clear();
    }
  }
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  PV load() {
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;  // PROTO
        case 0x95: bytes(8); break;  // FRAME (framing is transparent for an in-memory reader)
        case '.':  // STOP
          return pop();
        case 'c': {  // GLOBAL "module\nname\n"
          auto v = make(PVal::kGlobal);
          std::string module = line(), name = line();
          v->s = module + "." + name;
          push(v);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          PV name = pop(), module = pop();
          if (module->kind != PVal::kStr || name->kind != PVal::kStr) fail("STACK_GLOBAL needs two strings");
          auto v = make(PVal::kGlobal);
          v->s = module->s + "." + name->s;
          push(v);
          break;
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case ')': push(container(PVal::kTuple)); break;          // EMPTY_TUPLE
        case 't': {                                          // TUPLE
          auto v = container(PVal::kTuple);
          v->items = pop_to_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t k = op - 0x84;
          if (stack_.size() < k + base()) fail("stack underflow");
          auto v = container(PVal::kTuple);
          v->items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(v);
          break;
        }
        case ']': push(container(PVal::kList)); break;  // EMPTY_LIST
        case 'l': {                                 // LIST
          auto v = container(PVal::kList);
          v->items = pop_to_mark();
          push(v);
          break;
        }
        case '}': push(container(PVal::kDict)); break;  // EMPTY_DICT
        case 'd': {                                 // DICT
          auto items = pop_to_mark();
          auto v = container(PVal::kDict);
          add_entries(v, items);
          push(v);
          break;
        }
        case 'a': {  // APPEND
          PV x = pop();
          PV& list = top();
          if (list->kind != PVal::kList) fail("APPEND to a non-list");
          list->items.push_back(x);
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_to_mark();
          PV& list = top();
          if (list->kind != PVal::kList) fail("APPENDS to a non-list");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case 's': {  // SETITEM
          PV value = pop(), key = pop();
          PV& dict = top();
          if (dict->kind != PVal::kDict) fail("SETITEM on a non-dict");
          dict->entries.emplace_back(key, value);
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_to_mark();
          PV& dict = top();
          if (dict->kind != PVal::kDict) fail("SETITEMS on a non-dict");
          add_entries(dict, items);
          break;
        }
        case 'N': push(make(PVal::kNone)); break;
        case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
          auto v = make(PVal::kBool);
          v->b = op == 0x88;
          push(v);
          break;
        }
        case 'K': push_int(u8()); break;                        // BININT1
        case 'M': push_int(le<uint16_t>()); break;              // BININT2
        case 'J': push_int(le<int32_t>()); break;               // BININT
        case 0x8a: {                                            // LONG1
          const uint8_t k = u8();
          if (k > 8) fail("integer too large (LONG1 of " + std::to_string(k) + " bytes)");
          const uint8_t* p = bytes(k);
          uint64_t v = 0;
          for (int j = 0; j < k; ++j) v |= uint64_t(p[j]) << (8 * j);
          if (k > 0 && k < 8 && (p[k - 1] & 0x80)) v |= ~uint64_t(0) << (8 * k);  // sign-extend
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {  // BINFLOAT (big-endian double)
          const uint8_t* p = bytes(8);
          uint64_t bits = 0;
          for (int j = 0; j < 8; ++j) bits = (bits << 8) | p[j];
          auto v = make(PVal::kFloat);
          std::memcpy(&v->f, &bits, 8);
          push(v);
          break;
        }
        case 'X': push_str(le<uint32_t>()); break;  // BINUNICODE
        case 0x8c: push_str(u8()); break;           // SHORT_BINUNICODE
        case 'T': push_str(le<uint32_t>()); break;  // BINSTRING (py2 str; treated as text)
        case 'U': push_str(u8()); break;            // SHORT_BINSTRING
        case 'q': memo_[u8()] = top(); break;                 // BINPUT
        case 'r': memo_[le<uint32_t>()] = top(); break;       // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;        // MEMOIZE
        case 'h': push(memo_get(u8())); break;                // BINGET
        case 'j': push(memo_get(le<uint32_t>())); break;      // LONG_BINGET
        case '0': pop(); break;                               // POP
        case 'Q': {                                           // BINPERSID
          PV pid = pop();
          push(persistent_load_(pid));
          break;
        }
        case 'R': {  // REDUCE
          PV args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: OrderedDict's __dict__ (the _metadata attribute) is not needed
          pop();
          if (top()->kind != PVal::kDict) fail(std::string("BUILD on a ") + kind_name(top()->kind));
          break;
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf + " at byte " + std::to_string(pos_ - 1) +
               " (not a state dict written by torch.save?)");
        }
      }
    }
  }

  size_t pos() const { return pos_; }

 private:
  [[noreturn]] void fail(const std::string& msg) const { throw FormatError(msg); }

  uint8_t u8() {
    if (pos_ >= n_) fail("truncated pickle");
    return d_[pos_++];
  }
  const uint8_t* bytes(size_t k) {
    if (k > n_ - pos_) fail("truncated pickle");
    const uint8_t* p = d_ + pos_;
    pos_ += k;
    return p;
  }
  template <class T>
  T le() {
    const uint8_t* p = bytes(sizeof(T));
    T v;
    std::memcpy(&v, p, sizeof(T));  // little-endian host assumed (x86-64, aarch64)
    return v;
  }
  std::string line() {
    std::string out;
    for (;;) {
      const char c = static_cast<char>(u8());
      if (c == '\n') return out;
      out.push_back(c);
      if (out.size() > 1000) fail("GLOBAL name too long");
    }
  }
  PV container(PVal::Kind k) {
    containers_.push_back(make(k));
    return containers_.back();
  }
  void push(PV v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t x) {
    auto v = make(PVal::kInt);
    v->i = x;
    push(v);
  }
  void push_str(size_t len) {
    auto v = make(PVal::kStr);
    const uint8_t* p = bytes(len);
    v->s.assign(reinterpret_cast<const char*>(p), len);
    push(v);
  }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  PV pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    PV v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  PV& top() {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<PV> pop_to_mark() {
    if (marks_.empty()) fail("MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PV> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }
  void add_entries(const PV& dict, const std::vector<PV>& items) {
    if (items.size() % 2) fail("odd number of dict items");
    for (size_t j = 0; j < items.size(); j += 2) dict->entries.emplace_back(items[j], items[j + 1]);
  }
  PV memo_get(uint32_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key " + std::to_string(k) + " missing");
    return it->second;
  }

  static std::vector<int64_t> int_tuple(const PV& v, const char* what) {
    if (v->kind != PVal::kTuple) throw FormatError(std::string("tensor ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      if (x->kind != PVal::kInt) throw FormatError(std::string("tensor ") + what + " holds a non-integer");
      out.push_back(x->i);
    }
    return out;
  }

  PV reduce(const PV& fn, const PV& args) {
    if (fn->kind != PVal::kGlobal) fail(std::string("REDUCE of a ") + kind_name(fn->kind));
    if (args->kind != PVal::kTuple) fail("REDUCE arguments are not a tuple");
    const auto& a = args->items;
    if (fn->s == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict with arguments is not supported");
      return container(PVal::kDict);
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2" || fn->s == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (a.size() < 4) fail(fn->s + " with " + std::to_string(a.size()) + " arguments");
      if (a[0]->kind != PVal::kStorage || a[1]->kind != PVal::kInt) fail(fn->s + ": bad storage arguments");
      auto t = make(PVal::kTensor);
      t->storage = a[0]->storage;
      t->tensor_offset = a[1]->i;
      t->sizes = int_tuple(a[2], "size");
      t->strides = int_tuple(a[3], "stride");
      if (t->sizes.size() != t->strides.size()) fail("tensor size and stride have different ranks");
      return t;
    }
    if (fn->s == "torch._utils._rebuild_parameter" || fn->s == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != PVal::kTensor) fail(fn->s + " without a tensor");
      return a[0];
    }
    fail("unsupported pickle global '" + fn->s + "' (only state dicts of tensors can be read)");
  }

  const uint8_t* d_;
  size_t n_;
  size_t pos_;
  PersistentLoad persistent_load_;
  std::vector<PV> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PV> memo_;
  std::vector<PV> containers_;  // every tuple, list and dict made (for the destructor)
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

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  f.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(f.tellg());
  f.seekg(0);
  std::vector<uint8_t> buf(size);
  if (size && !f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(size)))
    throw Error(path + ": read error");
  return buf;
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
  Unpickler up(pkl, pkl_size, 0, persistent_load);
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
  auto no_pid = [](const PV&) -> PV { throw FormatError("unexpected persistent id in the header"); };
  // The first pickle is the magic number 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 of 10 bytes, STOP).
  static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                   0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  if (buf.size() < sizeof kMagic || std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0)
    throw FormatError("a pickle file, but not one written by torch.save (magic number missing)");
  size_t pos = sizeof kMagic;
  for (int k = 0; k < 2; ++k) {  // protocol version, sys_info
    Unpickler up(buf.data(), buf.size(), pos, no_pid);
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
  Unpickler up(buf.data(), buf.size(), pos, persistent_load);
  PV top = up.load();
  pos = up.pos();
  Unpickler keys_up(buf.data(), buf.size(), pos, no_pid);
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
    if (!head.empty() && head[0] == 0x80) return load_legacy(read_file(path));
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
