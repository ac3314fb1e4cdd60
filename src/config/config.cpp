#include <featlearn/common/atomic_file.h>
#include <featlearn/config/config.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <fstream>
#include <sstream>

namespace featlearn {

namespace {
// Rejects what YAML readers disagree on or what no config key can be (docs/architecture.md, "Config"):
// duplicate keys in one map (yaml-cpp keeps the first, PyYAML the last) and keys that are lists or maps.
void check_structure(const YAML::Node& n, const std::string& where, const std::string& path) {
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) check_structure(n[i], where, path + "[" + std::to_string(i) + "]");
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> 1-based line
  for (auto it = n.begin(); it != n.end(); ++it) {
    const int line = it->first.Mark().line + 1;
    const std::string at = where + (line > 0 ? ":" + std::to_string(line) : std::string());
    if (!it->first.IsScalar())
      throw ConfigError(fmt::format("{}: {}a key must be a plain name, got {}", at, path.empty() ? "" : path + ": ",
                                    it->first.IsSequence() ? "a list" : it->first.IsMap() ? "a map" : "null"));
    const std::string key = it->first.Scalar();
    const std::string key_path = path.empty() ? key : path + "." + key;
    const auto [prev, fresh] = seen.emplace(key, line);
    if (!fresh)
      throw ConfigError(fmt::format("{}: {}: duplicate key (also on line {}); YAML readers disagree on which one "
                                    "wins, so keep only one",
                                    at, key_path, prev->second));
    check_structure(it->second, where, key_path);
  }
}

// A list index of an `-o` key path, or nullopt when `s` is not a plain number that fits.
std::optional<size_t> parse_index(const std::string& s) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return static_cast<size_t>(std::stoul(s));
}
}  // namespace

ConfigNode::ConfigNode(YAML::Node node, std::string path, std::shared_ptr<const std::string> file)
    : node_(std::move(node)), path_(std::move(path)), file_(std::move(file)) {
  if (node_.IsDefined()) {
    const auto m = node_.Mark();
    if (m.line >= 0) line_ = m.line + 1;
  }
}

ConfigNode& ConfigNode::operator=(const ConfigNode& other) {
  if (this == &other) return *this;
  node_.reset(other.node_);
  path_ = other.path_;
  file_ = other.file_;
  line_ = other.line_;
  overrides_ = other.overrides_;
  return *this;
}

std::string ConfigNode::where() const {
  std::string out = file_ ? *file_ : std::string("<config>");
  const bool from_override = overridden();
  if (line_ > 0 && !from_override) out += ":" + std::to_string(line_);
  if (!path_.empty()) out += ": " + path_;
  if (from_override) out += " (set by -o)";
  return out;
}

bool ConfigNode::overridden() const {
  if (!overrides_) return false;
  for (const auto& o : *overrides_)
    if (path_ == o || (path_.size() > o.size() && path_.compare(0, o.size(), o) == 0 &&
                       (path_[o.size()] == '.' || path_[o.size()] == '[')))
      return true;
  return false;
}

ConfigNode ConfigNode::child(YAML::Node node, std::string path) const {
  ConfigNode c(std::move(node), std::move(path), file_);
  c.overrides_ = overrides_;
  if (c.line_ < 0) c.line_ = line_;
  return c;
}

void ConfigNode::fail(const std::string& msg) const { throw ConfigError(where() + ": " + msg); }

bool ConfigNode::has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined();
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (!node_.IsMap()) return out;
  for (auto it = node_.begin(); it != node_.end(); ++it) out.push_back(it->first.Scalar());
  return out;
}

ConfigNode ConfigNode::operator[](const std::string& key) const {
  const std::string child_path = path_.empty() ? key : path_ + "." + key;
  if (node_.IsMap() && node_[key].IsDefined()) return child(node_[key], child_path);
  ConfigNode c = child(YAML::Node(YAML::NodeType::Undefined), child_path);
  c.line_ = line_;
  return c;
}

ConfigNode ConfigNode::at(size_t i) const {
  if (!node_.IsSequence() || i >= node_.size())
    fail(fmt::format("no list element {} (the list has {} elements)", i, node_.IsSequence() ? node_.size() : 0));
  return child(node_[i], path_ + "[" + std::to_string(i) + "]");
}

std::pair<std::string, ConfigNode> ConfigNode::single_entry() const {
  if (node_.IsScalar()) {  // `- Name` without parameters
    const std::string name = node_.as<std::string>();
    ConfigNode params = child(YAML::Node(YAML::NodeType::Map), path_ + "." + name);
    params.line_ = line_;
    return {name, params};
  }
  if (!node_.IsMap() || node_.size() != 1)
    fail("expected a single-key map of the form `- Name: {params}`");
  const std::string name = node_.begin()->first.Scalar();
  ConfigNode params = (*this)[name];
  if (!params.defined()) {  // `- Name:` with nothing after it
    params = child(YAML::Node(YAML::NodeType::Map), params.path_);
    params.line_ = line_;
  } else if (!params.is_map()) {
    params.fail("expected a map of parameters");
  }
  return {name, params};
}

std::string ConfigNode::type_name() const {
  switch (node_.Type()) {
    case YAML::NodeType::Undefined: return "nothing";
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "'" + node_.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
  }
  return "?";
}

namespace {
template <class T>
T convert_scalar(const ConfigNode& n, const YAML::Node& y, const char* what) {
  if (!n.defined()) n.fail(std::string("missing value; expected ") + what);
  if (!y.IsScalar()) n.fail(std::string("expected ") + what + ", got " + (y.IsMap() ? "a map" : "a list"));
  try {
    return y.as<T>();
  } catch (const YAML::Exception&) {
    n.fail(std::string("expected ") + what + ", got '" + y.Scalar() + "'");
  }
}

template <class T>
std::vector<T> convert_list(const ConfigNode& n, const YAML::Node& y, const char* what) {
  if (!n.defined()) n.fail(std::string("missing value; expected a list of ") + what);
  std::vector<T> out;
  if (y.IsScalar()) {  // a single value where a list is accepted: [value]
    out.push_back(convert_scalar<T>(n, y, what));
    return out;
  }
  if (!y.IsSequence()) n.fail(std::string("expected a list of ") + what + ", got a map");
  for (size_t i = 0; i < y.size(); ++i) out.push_back(convert_scalar<T>(n.at(i), y[i], what));
  return out;
}
}  // namespace

template <> bool ConfigNode::as<bool>() const { return convert_scalar<bool>(*this, node_, "true or false"); }
template <> int ConfigNode::as<int>() const { return convert_scalar<int>(*this, node_, "an integer"); }
template <> int64_t ConfigNode::as<int64_t>() const { return convert_scalar<int64_t>(*this, node_, "an integer"); }
template <> float ConfigNode::as<float>() const { return convert_scalar<float>(*this, node_, "a number"); }
template <> double ConfigNode::as<double>() const { return convert_scalar<double>(*this, node_, "a number"); }
template <> std::string ConfigNode::as<std::string>() const {
  return convert_scalar<std::string>(*this, node_, "a string");
}
template <> std::vector<int> ConfigNode::as<std::vector<int>>() const {
  return convert_list<int>(*this, node_, "integers");
}
template <> std::vector<int64_t> ConfigNode::as<std::vector<int64_t>>() const {
  return convert_list<int64_t>(*this, node_, "integers");
}
template <> std::vector<float> ConfigNode::as<std::vector<float>>() const {
  return convert_list<float>(*this, node_, "numbers");
}
template <> std::vector<double> ConfigNode::as<std::vector<double>>() const {
  return convert_list<double>(*this, node_, "numbers");
}
template <> std::vector<std::string> ConfigNode::as<std::vector<std::string>>() const {
  return convert_list<std::string>(*this, node_, "strings");
}

void ConfigNode::check_keys(const std::vector<std::string>& allowed) const {
  if (!node_.IsDefined() || node_.IsNull()) return;
  if (!node_.IsMap()) fail("expected a map of keys (" + join(allowed) + "), got " + type_name());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    ConfigNode bad = child(it->second, path_.empty() ? key : path_ + "." + key);
    const auto m = it->first.Mark();
    bad.line_ = m.line >= 0 ? m.line + 1 : line_;
    bad.fail("unknown key" + did_you_mean(key, allowed) + " (valid keys: " + join(allowed) + ")");
  }
}

// ---------------------------------------------------------------------------------------------------------

Config::Config(const Config& other) {
  if (!other.file_) return;  // default-constructed
  *this = from_string(other.text_, *other.file_);
  apply_overrides(other.applied_);
}

Config& Config::operator=(const Config& other) {
  if (this != &other) *this = Config(other);
  return *this;
}

Config Config::load(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(file + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_string(ss.str(), file);
}

Config Config::from_string(const std::string& yaml_text, const std::string& name) {
  Config c;
  c.file_ = std::make_shared<const std::string>(name);
  c.text_ = yaml_text;
  try {
    c.root_ = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}:{}: YAML syntax error: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (c.root_.IsNull()) c.root_ = YAML::Node(YAML::NodeType::Map);
  if (!c.root_.IsMap()) throw ConfigError(name + ": the config must be a YAML map (Global, Arch, ...)");
  check_structure(c.root_, name, "");
  return c;
}

ConfigNode Config::root() const {
  ConfigNode r(root_, "", file_);
  r.overrides_ = overrides_;
  return r;
}

namespace {
// "a.b[2].c" or "a.b.2.c" -> {"a","b","2","c"}
std::vector<std::string> split_key_path(const std::string& key) {
  std::vector<std::string> parts;
  std::string cur;
  for (char ch : key) {
    if (ch == '.' || ch == '[' || ch == ']') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}
bool is_index(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
}  // namespace

void Config::apply_override(const std::string& assignment) {
  set_value(assignment);
  applied_.push_back(assignment);  // only once it succeeded, so copies can replay it
}

void Config::set_value(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("-o " + assignment + ": expected Key.sub=value (e.g. -o Global.epochs=10)");
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  const auto parts = split_key_path(key);
  if (parts.empty()) throw ConfigError("-o " + assignment + ": empty key");
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError("-o " + assignment + ": cannot parse the value as YAML: " + e.msg);
  }
  check_structure(parsed, "-o " + assignment, "");
  YAML::Node cur;
  cur.reset(root_);
  std::string walked;
  // Record the key path in ConfigNode form (map keys dotted, list indices in brackets) for error messages.
  {
    std::string norm;
    YAML::Node probe;
    probe.reset(root_);
    for (const auto& p : parts) {
      const bool idx = probe.IsSequence() && is_index(p);
      norm += idx ? "[" + p + "]" : (norm.empty() ? "" : ".") + p;
      if (idx && parse_index(p) && *parse_index(p) < probe.size()) {
        YAML::Node n = probe[*parse_index(p)];
        probe.reset(n);
      } else if (!idx && probe.IsMap() && probe[p].IsDefined()) {
        YAML::Node n = probe[p];
        probe.reset(n);
      } else {
        probe.reset(YAML::Node());
      }
    }
    overrides_->insert(norm);
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    const bool last = i + 1 == parts.size();
    if (cur.IsSequence()) {
      if (!is_index(p))
        throw ConfigError("-o " + assignment + ": " + walked + " is a list; use a number index, not '" + p + "'");
      const auto index = parse_index(p);
      if (!index || *index >= cur.size())
        throw ConfigError(fmt::format("-o {}: {} has {} elements; index {} is out of range", assignment, walked,
                                      cur.size(), p));
      const size_t idx = *index;
      if (last) {
        cur[idx] = parsed;
        return;
      }
      YAML::Node next = cur[idx];
      cur.reset(next);
      walked += "[" + p + "]";
      continue;
    }
    if (!cur.IsMap() && !cur.IsNull())
      throw ConfigError("-o " + assignment + ": " + walked + " is a value, not a map; cannot set '" + p + "' in it");
    if (last) {
      cur[p] = parsed;
      return;
    }
    if (!cur[p].IsDefined() || cur[p].IsNull()) cur[p] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[p];
    cur.reset(next);
    walked += (walked.empty() ? "" : ".") + p;
  }
}

void Config::apply_overrides(const std::vector<std::string>& assignments) {
  for (size_t i = 0; i < assignments.size(); ++i) {
    const auto& a = assignments[i];
    // `-o Global.epochs 3` reaches here as two words: say how to write it.
    if (a.find('=') == std::string::npos && i + 1 < assignments.size() &&
        assignments[i + 1].find('=') == std::string::npos)
      throw ConfigError("-o " + a + " " + assignments[i + 1] + ": expected Key.sub=value without spaces around '=' "
                        "(write -o " + a + "=" + assignments[i + 1] + ")");
    apply_override(a);
  }
}

std::string Config::dump() const {
  YAML::Emitter out;
  out << root_;
  return out.c_str();
}

void Config::save(const std::string& path) const { write_file_atomic(path, dump() + "\n"); }

}  // namespace featlearn
