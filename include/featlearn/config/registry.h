// One registry per component slot ("Arch.Backbone", "Arch.Head", "Loss", "transform_ops", ...), keyed by the
// name used in configs. Registries are filled by explicit register_builtin_*() calls (static-initializer
// self-registration would be dropped by static linking). Asking for an unknown name throws a ConfigError
// that names the key path, lists the valid names and suggests the nearest one.
#pragma once
#include <featlearn/config/config.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace featlearn {

template <class Product, class... Args>
class Registry {
 public:
  using Factory = std::function<Product(const ConfigNode& params, Args... args)>;

  explicit Registry(std::string slot) : slot_(std::move(slot)) {}

  void add(const std::string& name, Factory factory) { factories_[name] = std::move(factory); }
  bool contains(const std::string& name) const { return factories_.count(name) > 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : factories_) out.push_back(kv.first);
    return out;
  }
  const std::string& slot() const { return slot_; }

  // `where` is the node that holds the name (for `name: X` keys, the `name` node itself).
  Product create(const std::string& name, const ConfigNode& where, const ConfigNode& params, Args... args) const {
    auto it = factories_.find(name);
    if (it == factories_.end())
      where.fail("unknown " + slot_ + " '" + name + "'" + did_you_mean(name, names()) +
                 " (valid names: " + join(names()) + ")");
    return it->second(params, std::forward<Args>(args)...);
  }

  // For `{name: X, ...params}` nodes: reads `name` (required) and creates X from the same node.
  Product create_named(const ConfigNode& node, Args... args) const {
    if (!node.is_map()) node.fail("expected a map with a 'name' key");
    const auto name_node = node["name"];
    const std::string name = node.require<std::string>("name");
    return create(name, name_node, node, std::forward<Args>(args)...);
  }

 private:
  std::string slot_;
  std::map<std::string, Factory> factories_;
};

}  // namespace featlearn
