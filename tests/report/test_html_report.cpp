// The HTML report's pieces (docs/report.md, "The HTML report"): escaping, query selection against
// hand-computed APs, curve data from metrics.jsonl, charts, thumbnails, and a page with no external reference.
#include <featlearn/report/html_report.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace featlearn::report;

namespace {
fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("featlearn_test_html_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}
}  // namespace

TEST(HtmlReport, EscapesEveryCharacterThatCouldBreakOutOfTextOrAttribute) {
  EXPECT_EQ(html_escape(R"(a&b<c>d"e'f)"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
  EXPECT_EQ(html_escape("plain/path_01.jpg"), "plain/path_01.jpg");
  // A path and a label with markup in them stay text in every place the page shows them.
  ReportData d;
  d.title = "<script>x</script>";
  QueryRow q{"/img/<b>\".jpg", "id<1>", 0.5, 2, {{"/g/'onerror='.jpg", "<i>", 0.9, false}}};
  d.grids.push_back({"Worst <queries>", {q}});
  d.config_yaml = "Global: {output_dir: \"<out>\"}";
  const std::string html = render_html(d);
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_EQ(html.find("'onerror='"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;x&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("id id&lt;1&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;out&gt;"), std::string::npos);
}

TEST(HtmlReport, SelectsWorstRandomAndBestQueriesByAp) {
  // APs by hand: query 3 has no true match (NaN) and is never shown.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> ap = {0.5, 1.0, 0.25, nan, 1.0, 0.1, 0.75, 0.5};
  const auto s = select_queries(ap, 2, 7);
  EXPECT_EQ(s.worst, (std::vector<int64_t>{5, 2}));  // 0.1, 0.25
  EXPECT_EQ(s.best, (std::vector<int64_t>{1, 4}));   // 1.0, 1.0: lower index first
  ASSERT_EQ(s.random.size(), 2u);
  for (int64_t q : s.random) {  // from {0, 6, 7}, disjoint from the others
    EXPECT_TRUE(q == 0 || q == 6 || q == 7) << q;
  }
  EXPECT_LT(s.random[0], s.random[1]);
  EXPECT_EQ(select_queries(ap, 2, 7).random, s.random);  // seeded
  // Fewer valid queries than asked: every query once, worst first.
  const auto few = select_queries({0.3, nan, 0.9}, 5, 1);
  EXPECT_EQ(few.worst, (std::vector<int64_t>{0, 2}));
  EXPECT_TRUE(few.best.empty());
  EXPECT_TRUE(few.random.empty());
}

TEST(HtmlReport, CurvesComeFromMetricsJsonlWithTheResumedRunsRecordsLast) {
  const auto dir = scratch("curves");
  {
    std::ofstream f(dir / "metrics.jsonl");
    f << R"({"phase":"run_start","start_epoch":1})" "\n"
      << R"({"phase":"train","epoch":1,"iter":2,"global_step":2,"lr":0.1,"loss":3.0,"ips":10.0,"CELoss":2.0,"TripletLossV2":1.0})" "\n"
      << R"({"phase":"train","epoch":1,"iter":4,"global_step":4,"lr":0.05,"loss":2.0,"ips":12.0,"CELoss":1.5,"TripletLossV2":0.5})" "\n"
      << R"({"phase":"eval","epoch":1,"recall1":0.5,"mAP":0.25,"seconds":1.0})" "\n"
      << "not json\n"
      << R"({"phase":"run_start","start_epoch":1})" "\n"
      << R"({"phase":"train","epoch":1,"iter":4,"global_step":4,"lr":0.05,"loss":1.0,"ips":11.0,"CELoss":0.75,"TripletLossV2":0.25})" "\n"
      << R"({"phase":"eval","epoch":2,"recall1":0.75,"mAP":0.5,"CELoss":7.5,"seconds":1.0})" "\n";
  }
  const auto charts = curves_from_metrics_jsonl((dir / "metrics.jsonl").string());
  ASSERT_EQ(charts.size(), 5u);
  EXPECT_EQ(charts[0].title, "Training loss");
  ASSERT_EQ(charts[0].series.size(), 3u);
  EXPECT_EQ(charts[0].series[0].name, "loss");
  EXPECT_EQ(charts[0].series[1].name, "CELoss");
  EXPECT_EQ(charts[0].series[0].points, (std::vector<std::pair<double, double>>{{2, 3.0}, {4, 1.0}}));  // rewritten step
  EXPECT_EQ(charts[1].series.at(0).points, (std::vector<std::pair<double, double>>{{2, 0.1}, {4, 0.05}}));
  EXPECT_EQ(charts[2].series.at(0).points, (std::vector<std::pair<double, double>>{{2, 10.0}, {4, 11.0}}));
  EXPECT_EQ(charts[3].title, "Evaluation metrics");
  ASSERT_EQ(charts[3].series.size(), 2u);  // recall1, mAP (fractions); the eval loss on its own chart
  EXPECT_EQ(charts[3].series[0].name, "recall1");  // in the order of the file's keys
  EXPECT_EQ(charts[3].series[0].points, (std::vector<std::pair<double, double>>{{1, 0.5}, {2, 0.75}}));
  EXPECT_EQ(charts[3].series[1].name, "mAP");
  EXPECT_EQ(charts[4].series.at(0).name, "CELoss");
  fs::remove_all(dir);
}

TEST(HtmlReport, ChartsDrawOnePathPerSeriesAndSayWhenEmpty) {
  Chart c{"CMC", "rank", "recall", {{"cmc", {{1, 0.5}, {2, 0.75}, {3, 1.0}}}, {"other", {{1, 0.1}, {2, std::nan("")}}}}};
  const std::string svg = svg_line_chart(c);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  // Two series, the axes, and a grid line per y tick: y spans 0.1..1, so nice ticks of 0.2 from 0 to 1.
  EXPECT_EQ(count(svg, "<path d=\"M"), 2u + 1u + 6u);
  for (const char* tick : {">0<", ">0.2<", ">0.4<", ">0.6<", ">0.8<", ">1.0<"})
    EXPECT_NE(svg.find(std::string("class=\"tk\"") + tick), std::string::npos) << tick;
  // Integer x values (ranks) get whole-number ticks only.
  for (const char* tick : {">1<", ">2<", ">3<"})
    EXPECT_NE(svg.find(std::string("class=\"tk\"") + tick), std::string::npos) << tick;
  EXPECT_EQ(svg.find(">1.5<"), std::string::npos);
  EXPECT_EQ(count(svg, "<circle"), 4u);                // the NaN point is a gap
  EXPECT_NE(svg.find("<title>cmc 2: 0.75</title>"), std::string::npos);
  EXPECT_NE(svg_line_chart(Chart{"Empty", "x", "y", {}}).find("no data"), std::string::npos);
  HistogramChart h{"Similarities", "cosine", -1, 1, 4, {{"positive", {0.9f, 0.8f, 0.6f}}, {"negative", {-0.5f, 0.1f}}}};
  const std::string hs = svg_histogram(h);
  // positive: bins [0.5,1) x3 -> one bar of 1.0; negative: bins [-1,-0.5) and [0,0.5) -> two bars of 0.5.
  EXPECT_EQ(count(hs, "fill-opacity"), 3u);
  EXPECT_NE(hs.find("positive (3)"), std::string::npos);
}

TEST(HtmlReport, ThumbnailsAreDownscaledJpegsEmbeddedOnce) {
  const auto dir = scratch("thumbs");
  cv::Mat img(300, 150, CV_8UC3, cv::Scalar(10, 200, 30));
  cv::imwrite((dir / "a.png").string(), img);
  std::ofstream(dir / "bad.jpg") << "not an image";
  const std::string uri = thumbnail_data_uri((dir / "a.png").string(), 96);
  const std::string prefix = "data:image/jpeg;base64,";
  ASSERT_EQ(uri.rfind(prefix, 0), 0u);
  const std::string b64 = uri.substr(prefix.size());
  std::vector<unsigned char> bytes(b64.size());
  const int n = EVP_DecodeBlock(bytes.data(), reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  ASSERT_GT(n, 0);
  bytes.resize(static_cast<size_t>(n));
  const cv::Mat back = cv::imdecode(bytes, cv::IMREAD_COLOR);
  ASSERT_FALSE(back.empty());
  EXPECT_EQ(back.rows, 96);
  EXPECT_EQ(back.cols, 48);
  EXPECT_EQ(thumbnail_data_uri((dir / "bad.jpg").string()), "");
  // In a page each image is embedded once however often it is shown, and an unreadable one is a labelled
  // placeholder.
  ReportData d;
  d.title = "t";
  d.grids.push_back({"Best", {QueryRow{(dir / "a.png").string(), "1", 1.0, 1,
                                       {{(dir / "a.png").string(), "1", 0.99, true},
                                        {(dir / "bad.jpg").string(), "2", 0.5, false}}}}});
  const std::string html = render_html(d);
  EXPECT_EQ(count(html, "<tr class=\"qrow\">"), 1u);
  EXPECT_EQ(count(html, "class=\"th hit i0\""), 1u);
  EXPECT_EQ(count(html, "class=\"th q i0\""), 1u);
  EXPECT_EQ(count(html, "data:image/jpeg;base64,"), 1u);
  EXPECT_EQ(count(html, "th missing miss"), 1u);
  EXPECT_NE(html.find("first true match: rank 1"), std::string::npos);
  // Nothing in the page refers to a URL outside it.
  EXPECT_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=\s*"(https?:|//))")));
  EXPECT_EQ(html.find("http"), std::string::npos);
  fs::remove_all(dir);
}
