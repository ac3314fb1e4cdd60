#include <featlearn/common/error.h>
#include <featlearn/io/npy.h>
#include <torch/torch.h>

#include <cstdio>
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
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(path + ": cannot write");
    f.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(header.size());
    const char lenb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    f.write(lenb, 2);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    if (!f) throw Error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": cannot rename " + tmp);
}

torch::Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  char magic[10];
  if (!f.read(magic, 10) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  size_t len = static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8);
  std::string header(len, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(len))) throw Error(path + ": truncated .npy header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'"))) throw Error(path + ": .npy header without descr");
  const std::string descr = m[1];
  if (header.find("'fortran_order': True") != std::string::npos) throw Error(path + ": Fortran-order .npy not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw Error(path + ": .npy header without shape");
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  std::regex num("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  torch::ScalarType type;
  if (descr == "<f4") type = torch::kFloat32;
  else if (descr == "<i8") type = torch::kInt64;
  else throw Error(path + ": unsupported .npy dtype " + descr + " (float32 / int64 only)");
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
  if (!f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size())))
    throw Error(path + ": truncated .npy data");
  return t;
}

}  // namespace featlearn
