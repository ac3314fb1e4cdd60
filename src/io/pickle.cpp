// The restricted pickle interpreter (see pickle.h).
#include "pickle.h"

#include <featlearn/common/error.h>

#include <cstdio>
#include <cstring>
#include <fstream>

namespace featlearn {
namespace pickle {

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
    case PVal::kBytes: return "bytes";
    case PVal::kTuple: return "tuple";
    case PVal::kList: return "list";
    case PVal::kDict: return "dict";
    case PVal::kGlobal: return "global";
    case PVal::kObject: return "object";
    case PVal::kStorage: return "storage";
    case PVal::kTensor: return "tensor";
  }
  return "?";
}

Unpickler::~Unpickler() {
  for (const auto& c : containers_) {
    c->items.clear();
    c->entries.clear();
    c->state.reset();
  }
}

PV Unpickler::container(PVal::Kind k) {
  containers_.push_back(make(k));
  return containers_.back();
}

PV Unpickler::load() {
  for (;;) {
    const uint8_t op = u8();
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = u8();
        if (proto > 5) fail("pickle protocol " + std::to_string(proto) + " is not supported");
        break;
      }
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
      case ')': push(container(PVal::kTuple)); break;     // EMPTY_TUPLE
      case 't': {                                         // TUPLE
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
      case 'l': {                                     // LIST
        auto v = container(PVal::kList);
        v->items = pop_to_mark();
        push(v);
        break;
      }
      case '}': push(container(PVal::kDict)); break;  // EMPTY_DICT
      case 'd': {                                     // DICT
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
      case 'K': push_int(u8()); break;            // BININT1
      case 'M': push_int(le<uint16_t>()); break;  // BININT2
      case 'J': push_int(le<int32_t>()); break;   // BININT
      case 0x8a: {                                // LONG1
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
      case 'X': push_str(le<uint32_t>(), PVal::kStr); break;    // BINUNICODE
      case 0x8d: push_str(le<uint64_t>(), PVal::kStr); break;   // BINUNICODE8
      case 0x8c: push_str(u8(), PVal::kStr); break;             // SHORT_BINUNICODE
      case 'T': push_str(le<uint32_t>(), PVal::kStr); break;    // BINSTRING (py2 str; treated as text)
      case 'U': push_str(u8(), PVal::kStr); break;              // SHORT_BINSTRING
      case 'C': push_str(u8(), PVal::kBytes); break;            // SHORT_BINBYTES
      case 'B': push_str(le<uint32_t>(), PVal::kBytes); break;  // BINBYTES
      case 0x8e: push_str(le<uint64_t>(), PVal::kBytes); break; // BINBYTES8
      case 'q': memo_[u8()] = top(); break;                     // BINPUT
      case 'r': memo_[le<uint32_t>()] = top(); break;           // LONG_BINPUT
      case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;  // MEMOIZE
      case 'h': push(memo_get(u8())); break;                    // BINGET
      case 'j': push(memo_get(le<uint32_t>())); break;          // LONG_BINGET
      case '0': pop(); break;                                   // POP
      case 'Q': {                                               // BINPERSID
        PV pid = pop();
        push(globals_.persistent_load(pid));
        break;
      }
      case 'R': {  // REDUCE
        PV args = pop(), fn = pop();
        if (fn->kind != PVal::kGlobal) fail(std::string("REDUCE of a ") + kind_name(fn->kind));
        if (args->kind != PVal::kTuple) fail("REDUCE arguments are not a tuple");
        PV v = globals_.reduce(fn->s, args);
        if (v->kind == PVal::kTuple || v->kind == PVal::kList || v->kind == PVal::kDict || v->kind == PVal::kObject)
          containers_.push_back(v);
        push(v);
        break;
      }
      case 'b': {  // BUILD
        PV state = pop();
        globals_.build(top(), state);
        break;
      }
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(std::string("unsupported pickle opcode ") + buf + " at byte " + std::to_string(pos_ - 1));
      }
    }
  }
}

uint8_t Unpickler::u8() {
  if (pos_ >= n_) fail("truncated pickle");
  return d_[pos_++];
}

const uint8_t* Unpickler::bytes(size_t k) {
  if (k > n_ - pos_) fail("truncated pickle");
  const uint8_t* p = d_ + pos_;
  pos_ += k;
  return p;
}

template <class T>
T Unpickler::le() {
  const uint8_t* p = bytes(sizeof(T));
  T v;
  std::memcpy(&v, p, sizeof(T));  // little-endian host assumed (x86-64, aarch64)
  return v;
}

std::string Unpickler::line() {
  std::string out;
  for (;;) {
    const char c = static_cast<char>(u8());
    if (c == '\n') return out;
    out.push_back(c);
    if (out.size() > 1000) fail("GLOBAL name too long");
  }
}

void Unpickler::push_int(int64_t x) {
  auto v = make(PVal::kInt);
  v->i = x;
  push(v);
}

void Unpickler::push_str(size_t len, PVal::Kind kind) {
  auto v = make(kind);
  const uint8_t* p = bytes(len);
  v->s.assign(reinterpret_cast<const char*>(p), len);
  push(v);
}

PV Unpickler::pop() {
  if (stack_.size() <= base()) fail("stack underflow");
  PV v = std::move(stack_.back());
  stack_.pop_back();
  return v;
}

PV& Unpickler::top() {
  if (stack_.size() <= base()) fail("stack underflow");
  return stack_.back();
}

std::vector<PV> Unpickler::pop_to_mark() {
  if (marks_.empty()) fail("MARK missing");
  const size_t m = marks_.back();
  marks_.pop_back();
  std::vector<PV> out(stack_.begin() + m, stack_.end());
  stack_.resize(m);
  return out;
}

void Unpickler::add_entries(const PV& dict, const std::vector<PV>& items) {
  if (items.size() % 2) fail("odd number of dict items");
  for (size_t j = 0; j < items.size(); j += 2) dict->entries.emplace_back(items[j], items[j + 1]);
}

PV Unpickler::memo_get(uint32_t k) {
  auto it = memo_.find(k);
  if (it == memo_.end()) fail("memo key " + std::to_string(k) + " missing");
  return it->second;
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

}  // namespace pickle
}  // namespace featlearn
