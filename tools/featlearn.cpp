// featlearn: thin command-line front end over the featlearn library.
#include <CLI/CLI.hpp>

#include <featlearn/engine/commands.h>
#include <featlearn/common/error.h>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"featlearn: feature (embedding) learning for image retrieval"};
  app.require_subcommand(1);

  featlearn::ConfigArgs cfg_args;
  auto add_config_args = [&](CLI::App* sub) {
    sub->add_option("-c,--config", cfg_args.config, "PaddleClas-style YAML config")->required();
    sub->add_option("-o,--override", cfg_args.overrides, "Key.sub=value override (repeatable)")
        ->allow_extra_args(false);
  };

  auto* describe = app.add_subcommand("describe", "Print the model tree, stop-layer names, shapes, parameter count");
  add_config_args(describe);

  CLI11_PARSE(app, argc, argv);
  try {
    featlearn::init_runtime();
    if (*describe) return featlearn::cmd_describe(cfg_args);
  } catch (const featlearn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
