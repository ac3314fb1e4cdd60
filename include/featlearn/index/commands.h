// `featlearn index build|append|remove|search|eval|info` (docs/index.md).
#pragma once
#include <featlearn/engine/commands.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

// build (operation "" = IndexProcess.index_operation), append, remove. `remove_ids` / `remove_labels`, when
// given, replace the data_file lines for a removal.
struct IndexBuildArgs {
  ConfigArgs cfg;
  std::string operation;
  std::vector<int64_t> remove_ids;
  std::vector<std::string> remove_labels;
};
int cmd_index_build(const IndexBuildArgs& args);

struct IndexSearchArgs {
  ConfigArgs cfg;
  std::string image;  // one query image (path as given)
  std::string list;   // or a list in the data_file format (paths relative to IndexProcess.image_root)
  std::optional<int64_t> top_k;
  std::optional<float> score_thres;
  std::string out;    // JSON lines file ("" = stdout)
};
// One JSON line per query, in input order: {"query", "results": [{"id", "path", "label", "score"}...]}.
int cmd_index_search(const IndexSearchArgs& args);

struct IndexEvalArgs {
  ConfigArgs cfg;
  std::string list;     // query images (data_file format; the second field is the query's label)
  int64_t sample = 1000;  // without --list: this many stored gallery vectors as queries
  std::optional<int64_t> top_k;
  std::string out;      // JSON report ("" = stdout only)
};
// Recall@k of the index against exact search on the same queries; with --list also label top-1/top-5 accuracy.
int cmd_index_eval(const IndexEvalArgs& args);

int cmd_index_info(const std::string& index_dir);

// A gallery list line: `path<delimiter>label[<delimiter>...]`; the delimiter " " splits on runs of
// whitespace. Throws Error naming file:line.
struct GalleryLine {
  std::string path, label, extra;
  int64_t line = 0;
};
std::vector<GalleryLine> read_gallery_list(const std::string& file, const std::string& delimiter, bool need_label);

}  // namespace featlearn
