// The restricted pickle interpreter shared by the torch.save reader (state_dict.cpp) and the paddle.save
// reader (pdparams.cpp). Private to src/io.
//
// It implements the opcodes of protocols 2..4 that pickled dicts of tensors / numpy arrays use, and never
// imports anything: GLOBAL / STACK_GLOBAL only name a global, and REDUCE / BUILD / BINPERSID are handed to a
// PickleGlobals policy that accepts a whitelist and throws for everything else. So a file cannot run code.
#pragma once
#include <ATen/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace featlearn {
namespace pickle {

// Internal parse failure; the readers convert it to Error("<file>: ...") at their API boundary.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A torch storage: `numel` elements of `dtype` starting at element `offset` of the root storage `key`.
struct StorageRef {
  std::string key;
  at::ScalarType dtype = at::kFloat;
  int64_t offset = 0;
  int64_t numel = 0;
};

struct PVal;
using PV = std::shared_ptr<PVal>;

// The pickle values the readers need. Torch tensors stay lazy (storage + geometry) until all storages are
// read, because torch's legacy format stores the bytes after the pickle.
struct PVal {
  enum Kind {
    kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kGlobal, kObject, kStorage, kTensor
  } kind = kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kStr (UTF-8), kBytes (raw), kGlobal: "module.name", kObject: its class ("numpy.ndarray")
  std::vector<PV> items;                    // kTuple, kList; kObject: the constructor arguments
  std::vector<std::pair<PV, PV>> entries;   // kDict
  PV state;                                 // kObject: the BUILD state (null before BUILD)
  StorageRef storage;                       // kStorage, kTensor
  std::vector<int64_t> sizes, strides;      // kTensor
  int64_t tensor_offset = 0;                // kTensor (elements into `storage`)
};

PV make(PVal::Kind k);
const char* kind_name(PVal::Kind k);

// What a reader accepts beyond plain data: REDUCE of a whitelisted global, BUILD, persistent ids.
class PickleGlobals {
 public:
  virtual ~PickleGlobals() = default;
  // `fn` is "module.name"; `args` a tuple. Returns the value, or throws FormatError for a global outside
  // the whitelist.
  virtual PV reduce(const std::string& fn, const PV& args) = 0;
  // Applies a BUILD `state` to `obj` (the value left on the stack).
  virtual void build(const PV& obj, const PV& state) = 0;
  virtual PV persistent_load(const PV& /*pid*/) { throw FormatError("unexpected persistent id"); }
};

// Interprets one pickle (up to STOP) from `data[pos...]`.
class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, size_t pos, PickleGlobals& globals)
      : d_(data), n_(size), pos_(pos), globals_(globals) {}
  // The memo lets a pickle put a container into itself (or nest containers deeply): the links are cut here,
  // so values form no reference cycles (leaks) and are not destroyed recursively. Containers are emptied
  // then: use the value load() returns while the Unpickler lives.
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  PV load();
  size_t pos() const { return pos_; }
  // A tuple/list/dict/object made outside load() (by a PickleGlobals) that the destructor must unlink.
  PV container(PVal::Kind k);

 private:
  [[noreturn]] void fail(const std::string& msg) const { throw FormatError(msg); }
  uint8_t u8();
  const uint8_t* bytes(size_t k);
  template <class T>
  T le();
  std::string line();
  void push(PV v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t x);
  void push_str(size_t len, PVal::Kind kind);
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  PV pop();
  PV& top();
  std::vector<PV> pop_to_mark();
  void add_entries(const PV& dict, const std::vector<PV>& items);
  PV memo_get(uint32_t k);

  const uint8_t* d_;
  size_t n_;
  size_t pos_;
  PickleGlobals& globals_;
  std::vector<PV> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PV> memo_;
  std::vector<PV> containers_;  // every tuple, list, dict and object made (for the destructor)
};

// Reads the whole file; Error("<path>: ...") when it cannot be opened or read.
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace pickle
}  // namespace featlearn
