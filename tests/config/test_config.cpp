#include <featlearn/config/config.h>
#include <featlearn/config/registry.h>
#include <gtest/gtest.h>

using featlearn::Config;
using featlearn::ConfigError;

namespace {
const char* kYaml = R"(Global:
  epochs: 20
  image_shape: [3, 64, 64]
Arch:
  name: RecModel
  Head:
    name: ArcMargin
    margin: 0.15
list:
  - A:
      x: 1
  - B
)";

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}
}  // namespace

TEST(Config, ReadsTypedValues) {
  auto c = Config::from_string(kYaml, "t.yaml");
  EXPECT_EQ(c["Global"]["epochs"].as<int>(), 20);
  EXPECT_EQ(c["Global"]["image_shape"].as<std::vector<int>>(), (std::vector<int>{3, 64, 64}));
  EXPECT_DOUBLE_EQ(c["Arch"]["Head"].get<double>("margin", 0.5), 0.15);
  EXPECT_DOUBLE_EQ(c["Arch"]["Head"].get<double>("scale", 80.0), 80.0);
  auto [name, params] = c["list"].at(0).single_entry();
  EXPECT_EQ(name, "A");
  EXPECT_EQ(params.require<int>("x"), 1);
  auto [name2, params2] = c["list"].at(1).single_entry();
  EXPECT_EQ(name2, "B");
  EXPECT_EQ(params2.size(), 0u);
}

TEST(Config, WrongTypeNamesPathAndLine) {
  auto c = Config::from_string(kYaml, "t.yaml");
  const auto msg = message_of([&] { c["Arch"]["Head"]["name"].as<int>(); });
  EXPECT_NE(msg.find("t.yaml:7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Arch.Head.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected an integer, got 'ArcMargin'"), std::string::npos) << msg;
}

TEST(Config, UnknownKeySuggestsNearest) {
  auto c = Config::from_string(kYaml, "t.yaml");
  const auto msg = message_of([&] { c["Arch"]["Head"].check_keys({"name", "margin_x", "marginal", "scale"}); });
  EXPECT_NE(msg.find("t.yaml:8: Arch.Head.margin: unknown key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean"), std::string::npos) << msg;
}

TEST(Config, MissingRequiredKey) {
  auto c = Config::from_string(kYaml, "t.yaml");
  const auto msg = message_of([&] { c["Arch"]["Head"].require<int>("class_num"); });
  EXPECT_NE(msg.find("Arch.Head"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing required key 'class_num'"), std::string::npos) << msg;
}

TEST(Config, OverridesParseYamlValues) {
  auto c = Config::from_string(kYaml, "t.yaml");
  c.apply_override("Global.epochs=5");
  c.apply_override("Arch.Head.margin=0.3");
  c.apply_override("Global.image_shape=[3, 32, 32]");
  c.apply_override("Global.image_shape.1=16");
  c.apply_override("list[0].A.x=7");
  c.apply_override("Global.new_key=abc");
  EXPECT_EQ(c["Global"]["epochs"].as<int>(), 5);
  EXPECT_DOUBLE_EQ(c["Arch"]["Head"]["margin"].as<double>(), 0.3);
  EXPECT_EQ(c["Global"]["image_shape"].as<std::vector<int>>(), (std::vector<int>{3, 16, 32}));
  EXPECT_EQ(c["list"].at(0)["A"]["x"].as<int>(), 7);
  EXPECT_EQ(c["Global"]["new_key"].as<std::string>(), "abc");
  EXPECT_NE(message_of([&] { c.apply_override("list.9.A=1"); }).find("out of range"), std::string::npos);
  // Errors in overridden values say so instead of pointing at a line of the file.
  c.apply_override("Arch.Head.margin=wide");
  const auto msg = message_of([&] { c["Arch"]["Head"]["margin"].as<double>(); });
  EXPECT_NE(msg.find("t.yaml: Arch.Head.margin (set by -o): expected a number, got 'wide'"), std::string::npos) << msg;
  EXPECT_NE(message_of([&] { c.apply_override("Global.epochs.x=1"); }).find("is a value"), std::string::npos);
  EXPECT_NE(message_of([&] { c.apply_override("novalue"); }).find("expected Key.sub=value"), std::string::npos);
}

TEST(Config, SyntaxErrorNamesLine) {
  const auto msg = message_of([] { Config::from_string("a: [1, 2\nb: 3\n", "bad.yaml"); });
  EXPECT_NE(msg.find("bad.yaml:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
}

TEST(Registry, UnknownNameListsValidNames) {
  featlearn::Registry<int> reg("Arch.Head");
  reg.add("ArcMargin", [](const featlearn::ConfigNode&) { return 1; });
  reg.add("CosMargin", [](const featlearn::ConfigNode&) { return 2; });
  auto c = Config::from_string("Head:\n  name: ArcMarginX\n", "h.yaml");
  const auto msg = message_of([&] { reg.create_named(c["Head"]); });
  EXPECT_NE(msg.find("h.yaml:2: Head.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean ArcMargin?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("valid names: ArcMargin, CosMargin"), std::string::npos) << msg;
  auto ok = Config::from_string("Head:\n  name: CosMargin\n", "h.yaml");
  EXPECT_EQ(reg.create_named(ok["Head"]), 2);
}

TEST(Config, CopiesAreDeepAndKeepLines) {
  auto a = Config::from_string(kYaml, "t.yaml");
  a.apply_override("Global.epochs=7");
  Config b = a;
  b.apply_override("Global.epochs=9");
  EXPECT_EQ(a["Global"]["epochs"].as<int>(), 7);
  EXPECT_EQ(b["Global"]["epochs"].as<int>(), 9);
  const auto msg = message_of([&] { b["Arch"]["Head"]["name"].as<int>(); });
  EXPECT_NE(msg.find("t.yaml:7: Arch.Head.name"), std::string::npos) << msg;
}

// yaml-cpp keeps the first of two equal keys and PyYAML (PaddleClas) the last: a duplicate is an error that
// names both lines, so the same file never means two things.
TEST(Config, DuplicateKeyIsAnErrorNamingBothLines) {
  const std::string yaml = "Global:\n  epochs: 5\n  seed: 1\n  epochs: 50\nArch:\n  name: RecModel\n";
  const auto msg = message_of([&] { Config::from_string(yaml, "dup.yaml"); });
  EXPECT_NE(msg.find("dup.yaml:4: Global.epochs: duplicate key (also on line 2)"), std::string::npos) << msg;
  // Inside lists of ops, too.
  const std::string ops = "ops:\n  - A:\n      x: 1\n      x: 2\n";
  const auto msg2 = message_of([&] { Config::from_string(ops, "ops.yaml"); });
  EXPECT_NE(msg2.find("ops.yaml:4: ops[0].A.x: duplicate key (also on line 3)"), std::string::npos) << msg2;
  // And in an -o value.
  auto c = Config::from_string(kYaml, "t.yaml");
  const auto msg3 = message_of([&] { c.apply_override("Global={a: 1, a: 2}"); });
  EXPECT_NE(msg3.find("-o Global={a: 1, a: 2}"), std::string::npos) << msg3;
  EXPECT_NE(msg3.find("a: duplicate key"), std::string::npos) << msg3;
}

TEST(Config, NonScalarKeyIsAnErrorWithLine) {
  const std::string yaml = "Global:\n  epochs: 5\n  ? [a, b]\n  : 1\n";
  const auto msg = message_of([&] { Config::from_string(yaml, "k.yaml"); });
  EXPECT_NE(msg.find("k.yaml:3: Global: a key must be a plain name, got a list"), std::string::npos) << msg;
}

TEST(Config, OverrideIndexOverflowIsAConfigError) {
  auto c = Config::from_string(kYaml, "t.yaml");
  const auto msg = message_of([&] { c.apply_override("list.99999999999999999999999.B=1"); });
  EXPECT_NE(msg.find("list has 2 elements; index 99999999999999999999999 is out of range"), std::string::npos) << msg;
  const auto msg2 = message_of([&] { c.apply_override("list[18446744073709551616]=1"); });
  EXPECT_NE(msg2.find("out of range"), std::string::npos) << msg2;
}

// Assigning one ConfigNode handle to another rebinds the handle; the config tree is not modified.
TEST(Config, NodeAssignmentRebindsWithoutTouchingTheTree) {
  auto c = Config::from_string(kYaml, "t.yaml");
  featlearn::ConfigNode n = c.root();
  n = n["Arch"];
  n = n["Head"];
  EXPECT_EQ(n.path(), "Arch.Head");
  EXPECT_EQ(c["Global"]["epochs"].as<int>(), 20);
  EXPECT_EQ(c["Arch"]["name"].as<std::string>(), "RecModel");
  EXPECT_EQ(c["Arch"]["Head"]["name"].as<std::string>(), "ArcMargin");
}
