// The whole-config check (docs/config.md, "Checking a config"): every section, key, component name and value
// of a training config, checked before anything slow runs (no list file, image or weights file is opened and
// nothing is downloaded). Every command runs it first; `featlearn check` runs only it.
#pragma once
#include <featlearn/config/config.h>

#include <string>
#include <vector>

namespace featlearn {

// What the config is about to be used for: decides which sections must be present. Sections that are present
// are checked whatever the use.
enum class ConfigUse { kCheck, kDescribe, kTrain, kEval, kExport };

// Throws ConfigError (file, line, key path, valid names) at the first problem.
void check_config(const ConfigNode& root, ConfigUse use);

// The commands (train, eval, export, describe) this config has every required section for, and for each
// other command the first section it lacks, e.g. {"train", ""}, {"eval", "missing DataLoader.Eval"}.
std::vector<std::pair<std::string, std::string>> config_commands(const ConfigNode& root);

}  // namespace featlearn
