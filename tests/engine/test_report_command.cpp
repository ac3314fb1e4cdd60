// `featlearn report` on a tiny trained retrieval run: the page holds every section, the metrics evaluate()
// computes, three grids of the expected size whose first green cell sits at the reported first-match rank,
// every thumbnail embedded and no URL; errors name what is missing. Then headless Chromium (Debian's
// `chromium`, network disabled) loads it: the DOM has every section and grid row and refers to no URL, and the
// screenshot is kept (docs/report.md; the README's picture comes from it).
#include <featlearn/config/config.h>
#include <featlearn/common/error.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/trainer.h>

#include "../error_of.h"
#include "tiny_run.h"
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

// One trained run shared by the tests of this file (built once per process; ctest runs each test alone).
struct TrainedRun {
  fs::path base, data, out;
  MetricValues eval;
};
const TrainedRun& trained_run() {
  static const TrainedRun run = [] {
    init_runtime();
    TrainedRun r;
    r.base = fs::temp_directory_path() / ("featlearn_report_" + std::to_string(::getpid()));
    r.data = test::make_tiny_reid_dataset(r.base / "data");
    r.out = r.base / "out";
    const std::string yaml = test::tiny_reid_config(r.data, r.out);
    Trainer(Config::from_string(yaml, "report.yaml"), Trainer::Mode::kTrain).train();
    Config c = Config::from_string(yaml, "report.yaml");
    c.apply_overrides({"Global.pretrained_model=" + (r.out / "RecModel" / "best_model").string()});
    r.eval = Trainer(c, Trainer::Mode::kEval).evaluate();
    return r;
  }();
  return run;
}

fs::path report_of(const TrainedRun& r, const std::string& name) {
  ReportArgs a;
  a.run_dir = r.out.string();
  a.out = (r.base / name).string();
  a.queries = 3;
  a.topk = 4;
  return write_report(a);
}

// Every grid row: (first-match rank it states, 1-based position of its first green cell or 0).
std::vector<std::pair<int, int>> rows_of(const std::string& html) {
  std::vector<std::pair<int, int>> rows;
  const std::string open = "<tr class=\"qrow\">";
  for (size_t at = html.find(open); at != std::string::npos; at = html.find(open, at + 1)) {
    const std::string row = html.substr(at, html.find("</tr>", at) - at);
    std::smatch m;
    const int stated = std::regex_search(row, m, std::regex("first true match: rank (\\d+)")) ? std::stoi(m[1]) : 0;
    int first_hit = 0, pos = 0;
    const std::regex cell("class=\"th (?:missing )?(q|hit|miss)[ \"]");
    for (auto it = std::sregex_iterator(row.begin(), row.end(), cell); it != std::sregex_iterator(); ++it) {
      if ((*it)[1] == "q") continue;
      ++pos;
      if ((*it)[1] == "hit" && first_hit == 0) first_hit = pos;
    }
    rows.emplace_back(stated, first_hit);
  }
  return rows;
}

}  // namespace

TEST(ReportCommand, ShortFormWritesOneSelfContainedPage) {
  const TrainedRun& r = trained_run();
  const fs::path out = report_of(r, "report.html");
  ASSERT_TRUE(fs::is_regular_file(out));
  const std::string html = read(out);
  for (const char* id : {"curves", "eval", "ranked", "config"})
    EXPECT_NE(html.find(fmt::format("<section id=\"{}\">", id)), std::string::npos) << id;
  // Nothing to fetch: no URL, no external stylesheet, script or image source.
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  // Training curves from metrics.jsonl: loss terms, lr and the per-epoch eval metrics.
  for (const char* curve : {"CELoss", "TripletLossV2", "Learning rate", "recall1", "mAP", "Evaluation metrics"})
    EXPECT_NE(html.find(curve), std::string::npos) << curve;
  // The metrics are evaluate()'s.
  for (const auto& [name, value] : r.eval)
    EXPECT_NE(html.find(fmt::format("<tr><td>{}</td><td>{:.4f}</td></tr>", name, value)), std::string::npos) << name;
  EXPECT_NE(html.find("CMC curve"), std::string::npos);
  EXPECT_NE(html.find("true matches (24)"), std::string::npos);  // 12 queries x their id's 2 gallery images
  // Three grids of 3 rows (12 valid queries: 3 worst, 3 random, 3 best), each a query and its top 4.
  EXPECT_EQ(count(html, "<table class=\"grid\""), 3u);
  const auto rows = rows_of(html);
  ASSERT_EQ(rows.size(), 9u);
  for (const auto& [stated, first_hit] : rows) {
    ASSERT_GE(stated, 1);
    // The first green cell is the stated first-match rank (or the match lies beyond the top 4).
    if (stated <= 4) EXPECT_EQ(first_hit, stated);
    else EXPECT_EQ(first_hit, 0);
  }
  EXPECT_EQ(count(html, "class=\"th q "), 9u);
  EXPECT_EQ(count(html, "class=\"th hit ") + count(html, "class=\"th miss "), 36u);
  // Every image is embedded once as a CSS class, and every cell's class is defined.
  std::set<std::string> classes;
  size_t cells = 0;
  const std::regex cell("class=\"th (q|hit|miss) (i\\d+)\"");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), cell); it != std::sregex_iterator(); ++it, ++cells)
    classes.insert((*it)[2]);
  EXPECT_EQ(cells, 45u);
  for (const auto& c : classes)
    EXPECT_EQ(count(html, "." + c + "{background-image:url(data:image/jpeg;base64,"), 1u) << c;
  EXPECT_EQ(count(html, "{background-image:url(data:image/jpeg;base64,"), classes.size());
  EXPECT_LE(classes.size(), 24u);
  // Paths are escaped.
  EXPECT_NE(html.find("id0&amp;cam&lt;0&gt;_0.png"), std::string::npos);
  EXPECT_EQ(html.find("cam<0>"), std::string::npos);
  // The resolved config and the model.
  EXPECT_NE(html.find("TripletLossV2"), std::string::npos);
  EXPECT_NE(html.find("parameters: "), std::string::npos);
  EXPECT_LT(fs::file_size(out), 2u * 1024 * 1024);
}

TEST(ReportCommand, ErrorsNameWhatIsMissing) {
  const TrainedRun& r = trained_run();
  auto message = [](const ReportArgs& a) { return test::error_of([&] { write_report(a); }); };
  ReportArgs a;
  a.run_dir = r.data.string();  // not a run directory
  EXPECT_NE(message(a).find("has no config.yaml"), std::string::npos) << message(a);
  const fs::path cfg = r.base / "cfg.yaml";
  std::ofstream(cfg) << test::tiny_reid_config(r.data, r.out);
  ReportArgs b;
  b.cfg.config = cfg.string();
  EXPECT_NE(message(b).find("Global.pretrained_model"), std::string::npos) << message(b);
  ReportArgs none;
  EXPECT_NE(message(none).find("needs a run directory"), std::string::npos) << message(none);
  const fs::path cls = r.base / "cls.yaml";
  std::ofstream(cls) << test::tiny_reid_config(r.data, r.out, "classification");
  ReportArgs c;
  c.cfg.config = cls.string();
  c.cfg.overrides = {"Global.pretrained_model=" + (r.out / "RecModel" / "latest").string()};
  EXPECT_NE(message(c).find("eval_mode"), std::string::npos) << message(c);
  ReportArgs k;
  k.run_dir = r.out.string();
  k.topk = 0;
  EXPECT_NE(message(k).find("--topk"), std::string::npos);
}

// Headless Chromium, network off: the DOM it builds from the page, and a screenshot.
TEST(ReportCommand, HeadlessChromiumRendersEverySection) {
  const char* candidates[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"};
  std::string browser;
  for (const char* c : candidates)
    if (fs::exists(c)) browser = c;
  if (browser.empty()) GTEST_SKIP() << "Chromium is not installed (Debian package chromium; scripts/setup.sh installs it)";
  const TrainedRun& r = trained_run();
  // FEATLEARN_REPORT_HTML=page.html checks (and screenshots) another report instead, e.g. the quickstart's
  // (the README's picture: docs/report.md, "Looking at it").
  const char* given = std::getenv("FEATLEARN_REPORT_HTML");
  const fs::path page = given && *given ? fs::path(given) : report_of(r, "browser.html");
  const size_t rows = count(read(page), "<tr class=\"qrow\">");
  if (!given) EXPECT_EQ(rows, 9u);
  ASSERT_GT(rows, 0u);
  const std::string flags =
      "--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking "
      "--disable-component-update --disable-sync --proxy-server=127.0.0.1:9 --host-resolver-rules=\"MAP * ~NOTFOUND\" "
      "--user-data-dir=" + (r.base / "chromium-profile").string();
  const fs::path dom = r.base / "dom.html";
  const std::string cmd = browser + " " + flags + " --dump-dom \"file://" + page.string() + "\" > \"" + dom.string() +
                          "\" 2> \"" + (r.base / "chromium.log").string() + "\"";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << read(r.base / "chromium.log");
  const std::string d = read(dom);
  ASSERT_FALSE(d.empty()) << read(r.base / "chromium.log");
  for (const char* id : {"curves", "eval", "ranked", "config"})
    EXPECT_NE(d.find(fmt::format("<section id=\"{}\">", id)), std::string::npos) << id;
  EXPECT_EQ(count(d, "<table class=\"grid\""), 3u);
  EXPECT_EQ(count(d, "<tr class=\"qrow\">"), rows);
  EXPECT_GE(count(d, "<svg"), 4u);  // curves, CMC, histogram
  EXPECT_EQ(d.find("http"), std::string::npos);

  const char* keep = std::getenv("FEATLEARN_REPORT_SCREENSHOT");
  const fs::path shot = keep && *keep ? fs::path(keep) : r.base / "report.png";
  const std::string snap = browser + " " + flags + " --hide-scrollbars --window-size=1280,2000 --screenshot=\"" +
                           shot.string() + "\" \"file://" + page.string() + "\" 2>> \"" +
                           (r.base / "chromium.log").string() + "\"";
  ASSERT_EQ(std::system(snap.c_str()), 0) << snap << "\n" << read(r.base / "chromium.log");
  const cv::Mat png = cv::imread(shot.string());
  ASSERT_FALSE(png.empty()) << shot;
  EXPECT_EQ(png.cols, 1280);
  EXPECT_EQ(png.rows, 2000);
  // Not a blank page: the rendered thumbnails and charts give many distinct colours.
  cv::Mat small;
  cv::resize(png, small, {128, 200}, 0, 0, cv::INTER_AREA);
  std::set<int> colours;
  for (int y = 0; y < small.rows; ++y)
    for (int x = 0; x < small.cols; ++x) {
      const auto p = small.at<cv::Vec3b>(y, x);
      colours.insert((p[0] / 16) << 8 | (p[1] / 16) << 4 | (p[2] / 16));
    }
  EXPECT_GT(colours.size(), 30u);
  std::printf("screenshot: %s\n", shot.string().c_str());
}
