#include <featlearn/common/atomic_file.h>
#include <featlearn/common/error.h>
#include <featlearn/io/npy.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <regex>

namespace featlearn {

void save_npy(const std::string& path, const torch::Tensor& tensor) {
  auto t = tensor.detach().cpu().contiguous();
  std::string descr;
  if (t.scalar_type() == torch::kFloat32) descr = "<f4";
  else if (t.scalar_type() == torch::kInt64) descr = "<i8";
  else throw Error(path + ": save_npy supports float32 and int64 tensors only");
  std::string shape = "(";
  for (int64_t d = 0; d < t.dim(); ++d) shape += std::to_string(t.size(d)) + (t.dim() == 1 || d + 1 < t.dim() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  const uint16_t len = static_cast<uint16_t>(header.size());
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(len & 0xff);
  bytes += static_cast<char>(len >> 8);
  bytes += header;
  bytes.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size()));
  write_file_atomic(path, bytes);
}

torch::Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  char magic[10];
  if (!f.read(magic, 10) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  if (magic[6] != 1)
    throw Error(path + ": .npy format version " + std::to_string(static_cast<unsigned char>(magic[6])) +
                " is not supported (1.0 only)");
  size_t len = static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8);
  std::string header(len, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(len))) throw Error(path + ": truncated .npy header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'"))) throw Error(path + ": .npy header without descr");
  const std::string descr = m[1];
  if (header.find("'fortran_order': True") != std::string::npos) throw Error(path + ": Fortran-order .npy not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw Error(path + ": .npy header without shape");
  torch::ScalarType type;
  if (descr == "<f4") type = torch::kFloat32;
  else if (descr == "<i8") type = torch::kInt64;
  else if (descr == "|b1") type = torch::kBool;  // e.g. the face-verification issame lists
  else throw Error(path + ": unsupported .npy dtype " + descr + " (float32 / int64 / bool only)");
  // "3, 4" / "5," / "": non-negative dimensions; their product must fit the rest of the file (checked before
  // anything is allocated, so a damaged header cannot ask for gigabytes).
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  const uint64_t element = c10::elementSize(type);
  uint64_t extent = element;  // bytes, ignoring zero dimensions (saturated at UINT64_MAX)
  bool empty = false;
  for (size_t start = 0; start <= dims.size();) {
    size_t end = dims.find(',', start);
    if (end == std::string::npos) end = dims.size();
    const std::string d = std::regex_replace(dims.substr(start, end - start), std::regex("^\\s+|\\s+$"), "");
    start = end + 1;
    if (d.empty() && end == dims.size()) break;  // "(5,)" and "()"
    if (d.empty() || d.size() > 18 || d.find_first_not_of("0123456789") != std::string::npos)
      throw Error(path + ": .npy shape (" + dims + ") is not a list of non-negative integers");
    const int64_t v = std::stoll(d);
    if (v == 0) empty = true;
    else extent = extent > UINT64_MAX / static_cast<uint64_t>(v) ? UINT64_MAX : extent * static_cast<uint64_t>(v);
    shape.push_back(v);
  }
  if (extent > static_cast<uint64_t>(INT64_MAX)) throw Error(path + ": .npy shape (" + dims + ") is too large");
  const uint64_t bytes = empty ? 0 : extent;
  const auto data_at = f.tellg();
  f.seekg(0, std::ios::end);
  const uint64_t available = static_cast<uint64_t>(f.tellg() - data_at);
  f.seekg(data_at);
  if (bytes > available)
    throw Error(path + ": truncated .npy data (the header's shape (" + dims + ") needs more bytes than the file holds)");
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
  if (!f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size())))
    throw Error(path + ": truncated .npy data");
  return t;
}

}  // namespace featlearn
