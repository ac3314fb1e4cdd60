// PaddleClas-style YAML configs.
//
// ConfigNode wraps a YAML node together with its key path in the config ("Arch.Head.margin") and the file it
// came from, so every error can say where: `cfg.yaml:42: Arch.Head.margn: unknown key; did you mean margin?`.
// Components read their own node and call check_keys() with the keys they understand, so nothing in a config
// is silently ignored.
#pragma once
#include <yaml-cpp/yaml.h>

#include <featlearn/common/error.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace featlearn {

class ConfigError : public Error {
 public:
  using Error::Error;
};

class ConfigNode {
 public:
  ConfigNode() = default;
  ConfigNode(YAML::Node node, std::string path, std::shared_ptr<const std::string> file);
  ConfigNode(const ConfigNode&) = default;
  ConfigNode(ConfigNode&&) = default;
  // Rebinds this handle to `other`'s node. (YAML::Node's own assignment would overwrite the referenced node
  // in the config tree with other's value.)
  ConfigNode& operator=(const ConfigNode& other);
  ConfigNode& operator=(ConfigNode&& other) { return *this = static_cast<const ConfigNode&>(other); }

  // Key path from the root, e.g. "DataLoader.Train.transform_ops[1].RandFlipImage".
  const std::string& path() const { return path_; }
  // "file:line: path" for messages (line omitted for values set by -o).
  std::string where() const;
  // Throws ConfigError("<where>: <msg>").
  [[noreturn]] void fail(const std::string& msg) const;

  bool defined() const { return node_.IsDefined() && !node_.IsNull(); }
  bool is_map() const { return node_.IsMap(); }
  bool is_seq() const { return node_.IsSequence(); }
  bool is_scalar() const { return node_.IsScalar(); }
  bool has(const std::string& key) const;
  size_t size() const { return node_.size(); }
  std::vector<std::string> keys() const;  // map keys in file order

  // Child by key (may be undefined; as<T>() on an undefined child reports it as missing).
  ConfigNode operator[](const std::string& key) const;
  // Sequence element.
  ConfigNode at(size_t i) const;
  // For list items of the form `- Name: {params}`: the single key and its value node.
  std::pair<std::string, ConfigNode> single_entry() const;

  // Typed read with a clear error on missing or wrong-type values.
  template <class T>
  T as() const;
  template <class T>
  T get(const std::string& key, const T& default_value) const {
    auto c = (*this)[key];
    return c.defined() ? c.as<T>() : default_value;
  }
  template <class T>
  T require(const std::string& key) const {
    auto c = (*this)[key];
    if (!c.defined()) fail("missing required key '" + key + "'");
    return c.as<T>();
  }
  template <class T>
  std::optional<T> optional(const std::string& key) const {
    auto c = (*this)[key];
    if (!c.defined()) return std::nullopt;
    return c.as<T>();
  }

  // Every key of this map must be in `allowed`; otherwise a ConfigError naming the key path, its line, and the
  // nearest allowed key.
  void check_keys(const std::vector<std::string>& allowed) const;

  const YAML::Node& yaml() const { return node_; }
  const std::shared_ptr<const std::string>& file() const { return file_; }

 private:
  friend class Config;
  ConfigNode child(YAML::Node node, std::string path) const;
  bool overridden() const;  // this value (or one above it) was set by -o
  std::string type_name() const;
  int line_ = -1;  // 1-based, -1 when unknown
  std::shared_ptr<const std::set<std::string>> overrides_;  // key paths set by -o
  YAML::Node node_;
  std::string path_;
  std::shared_ptr<const std::string> file_;
};

// A loaded config: the root node plus the file name. Overrides are applied in place.
class Config {
 public:
  Config() = default;
  // Copies are deep (YAML nodes are references otherwise): overriding a copy leaves the original alone.
  Config(const Config& other);
  Config& operator=(const Config& other);
  Config(Config&&) = default;
  Config& operator=(Config&&) = default;

  static Config load(const std::string& file);
  static Config from_string(const std::string& yaml_text, const std::string& name = "<string>");

  // "Arch.Head.margin=0.2", "DataLoader.Train.transform_ops.1.RandFlipImage.flip_code=0" or with [1].
  // The value is parsed as YAML (scalar, list, map). Missing map keys are created; a sequence index out of
  // range is an error.
  void apply_override(const std::string& assignment);
  void apply_overrides(const std::vector<std::string>& assignments);

  ConfigNode root() const;
  ConfigNode operator[](const std::string& key) const { return root()[key]; }
  std::string dump() const;
  // Writes the resolved config (atomically) to `path`.
  void save(const std::string& path) const;
  const std::string& file() const { return *file_; }

 private:
  void set_value(const std::string& assignment);
  YAML::Node root_;
  std::shared_ptr<const std::string> file_;
  std::shared_ptr<std::set<std::string>> overrides_ = std::make_shared<std::set<std::string>>();
  std::string text_;                    // the source, so copies can re-parse it (YAML::Clone drops positions)
  std::vector<std::string> applied_;    // overrides applied so far, in order
};

}  // namespace featlearn

namespace featlearn {
template <> bool ConfigNode::as<bool>() const;
template <> int ConfigNode::as<int>() const;
template <> int64_t ConfigNode::as<int64_t>() const;
template <> float ConfigNode::as<float>() const;
template <> double ConfigNode::as<double>() const;
template <> std::string ConfigNode::as<std::string>() const;
template <> std::vector<int> ConfigNode::as<std::vector<int>>() const;
template <> std::vector<int64_t> ConfigNode::as<std::vector<int64_t>>() const;
template <> std::vector<float> ConfigNode::as<std::vector<float>>() const;
template <> std::vector<double> ConfigNode::as<std::vector<double>>() const;
template <> std::vector<std::string> ConfigNode::as<std::vector<std::string>>() const;
}  // namespace featlearn
