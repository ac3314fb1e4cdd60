// The self-contained HTML run report (docs/report.md, "The HTML report"): pure rendering. The data (curves,
// metrics, ranked lists) is gathered by `featlearn report` (src/engine/report_command.cpp); everything here
// turns it into one HTML file with inline SVG and embedded JPEG thumbnails, and never refers to a URL.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace featlearn::report {

// Text for HTML element content and attribute values: & < > " ' escaped.
std::string html_escape(std::string_view text);

// One line of a chart: (x, y) points in x order; non-finite y values are gaps.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};
struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
};
// An inline <svg> line chart with axes, 5 ticks per axis, a legend, and a <title> per point (hover value).
// A chart without points renders as a note saying so.
std::string svg_line_chart(const Chart& chart, int width = 520, int height = 280);

// Two overlaid normalized histograms (e.g. positive and negative similarities) on shared bins over [lo, hi].
struct HistogramChart {
  std::string title, x_label;
  double lo = -1, hi = 1;
  int bins = 50;
  std::vector<std::pair<std::string, std::vector<float>>> samples;  // name -> values
};
std::string svg_histogram(const HistogramChart& h, int width = 520, int height = 280);

// `data:image/jpeg;base64,...` of the image at `path` downscaled to fit max_side x max_side (OpenCV decode,
// INTER_AREA, JPEG quality 80), or "" if the file cannot be read as an image.
std::string thumbnail_data_uri(const std::string& path, int max_side = 96);

// Curves from output_dir/metrics.jsonl: loss terms and total per logged step, lr, images/s, and every eval
// metric per evaluated epoch (of the last run, when the file holds several run_start records, with earlier
// runs' records kept before it so a resumed run shows its whole history). Lines that are not JSON are skipped.
std::vector<Chart> curves_from_metrics_jsonl(const std::string& path);

// Queries to show: the n with the lowest AP (worst first), n random others (by `seed`), and the n with the
// highest AP (best first). Ties broken by query index. Queries with NaN AP (no true match) are left out.
struct QuerySelection {
  std::vector<int64_t> worst, random, best;
};
QuerySelection select_queries(const std::vector<double>& ap, int64_t n, uint64_t seed);

struct RankedItem {
  std::string path, label;
  double score = 0;
  bool match = false;
};
struct QueryRow {
  std::string path, label;
  double ap = 0;
  int64_t first_match_rank = 0;  // 1-based; 0: no true match in the gallery
  std::vector<RankedItem> top;
};
struct MetricRow {
  std::string name;
  double value = 0;
};
struct ReportData {
  std::string title, subtitle;
  std::vector<Chart> curves;
  std::vector<MetricRow> metrics;
  std::string eval_note;  // e.g. "120 queries, 480 gallery images; same-camera matches excluded"
  Chart cmc;
  HistogramChart similarities;
  std::vector<std::pair<std::string, std::vector<QueryRow>>> grids;  // section title -> rows
  std::string config_yaml, model_description;
  int thumbnail_side = 96;
};
// The whole page. Thumbnails are embedded once per distinct path.
std::string render_html(const ReportData& data);

}  // namespace featlearn::report
