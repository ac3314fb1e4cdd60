// The HTML run report's rendering (docs/report.md, "The HTML report").
#include <featlearn/report/html_report.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <set>

namespace featlearn::report {

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string num(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.2e}", v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 1) return fmt::format("{:.3g}", v);
  return fmt::format("{:.3f}", v);
}

// Pixel mapping of a data range, widened to "nice" tick bounds: a tick step of 1, 2 or 5 x 10^k giving about
// 4-6 ticks (at least 1 for integer data such as iterations, epochs and ranks), the range rounded out to
// whole steps, and tick labels with just enough decimals for the step.
struct Axis {
  double lo, hi, step;
  double px0, px1;
  Axis(double l, double h, double p0, double p1, bool integer = false) : lo(l), hi(h), px0(p0), px1(p1) {
    if (!(hi > lo)) {
      const double pad = lo == 0 ? 1 : std::abs(lo) * 0.05;
      lo -= pad;
      hi += pad;
    }
    const double raw = (hi - lo) / 5;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double f = raw / mag;
    step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
    if (integer) step = std::max(step, 1.0);
    lo = std::floor(lo / step + 1e-9) * step;
    hi = std::ceil(hi / step - 1e-9) * step;
  }
  double operator()(double v) const { return px0 + (v - lo) / (hi - lo) * (px1 - px0); }
  std::vector<double> ticks() const {
    std::vector<double> t;
    for (int64_t i = 0;; ++i) {
      const double v = lo + step * static_cast<double>(i);
      if (v > hi + step * 1e-6 || i > 20) break;
      t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
    }
    return t;
  }
  std::string label(double v) const {
    if (v == 0) return "0";
    const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    if (std::abs(v) >= 1e5 || decimals > 8) return fmt::format("{:.4g}", v);
    return fmt::format("{:.{}f}", v, decimals);
  }
};

std::string svg_open(int width, int height, const std::string& title) {
  return fmt::format(R"(<svg class="chart" width="{0}" height="{1}" viewBox="0 0 {0} {1}" role="img"><title>{2}</title><rect width="{0}" height="{1}" fill="#fff"/><text x="{3}" y="16" text-anchor="middle" class="ct">{2}</text>)",
                     width, height, html_escape(title), width / 2);
}

// Axes, ticks and labels of the plot area [l, r] x [t, b].
std::string svg_axes(const Axis& x, const Axis& y, double l, double r, double t, double b, const std::string& xl,
                     const std::string& yl) {
  std::string s = fmt::format(R"(<path d="M{0},{1}V{2}H{3}" stroke="#333" fill="none"/>)", l, t, b, r);
  for (const double xv : x.ticks())
    s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" class="tk">{}</text>)", x(xv), b + 14,
                     html_escape(x.label(xv)));
  for (const double yv : y.ticks()) {
    s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="end" class="tk">{}</text>)", l - 4, y(yv) + 4,
                     html_escape(y.label(yv)));
    s += fmt::format(R"(<path d="M{:.1f},{:.1f}H{:.1f}" stroke="#eee"/>)", l + 1, y(yv), r);
  }
  s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" class="tk">{}</text>)", (l + r) / 2, b + 30,
                   html_escape(xl));
  if (!yl.empty())
    s += fmt::format(R"~(<text x="12" y="{:.1f}" text-anchor="middle" class="tk" transform="rotate(-90 12 {:.1f})">{}</text>)~",
                     (t + b) / 2, (t + b) / 2, html_escape(yl));
  return s;
}

std::string legend(const std::vector<std::string>& names, double x, double y) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="10" height="10" fill="{}"/><text x="{:.1f}" y="{:.1f}" class="tk">{}</text>)",
                     x, y + 14.0 * i, kColors[i % 10], x + 14, y + 9 + 14.0 * i, html_escape(names[i]));
  return s;
}

}  // namespace

std::string svg_line_chart(const Chart& chart, int width, int height) {
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  size_t points = 0;
  for (const auto& s : chart.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
      ++points;
    }
  if (points == 0)
    return "<p class=\"note\">" + html_escape(chart.title) + ": no data in this run.</p>";
  bool integer_x = true;
  for (const auto& se : chart.series)
    for (const auto& pt : se.points) integer_x = integer_x && (!std::isfinite(pt.first) || pt.first == std::floor(pt.first));
  const double l = 58, r = width - 150, t = 26, b = height - 40;
  const Axis x(xlo, xhi, l, r, integer_x), y(ylo, yhi, b, t);
  std::string s = svg_open(width, height, chart.title) + svg_axes(x, y, l, r, t, b, chart.x_label, chart.y_label);
  std::vector<std::string> names;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& se = chart.series[i];
    names.push_back(se.name);
    std::string d;
    bool pen_down = false;
    for (const auto& [px, py] : se.points) {
      if (!std::isfinite(px) || !std::isfinite(py)) {
        pen_down = false;
        continue;
      }
      d += fmt::format("{}{:.1f},{:.1f}", pen_down ? "L" : "M", x(px), y(py));
      pen_down = true;
    }
    s += fmt::format(R"(<path d="{}" stroke="{}" stroke-width="1.6" fill="none"/>)", d, kColors[i % 10]);
    // Markers with hover values when the series is short enough to read.
    if (se.points.size() <= 60)
      for (const auto& [px, py] : se.points)
        if (std::isfinite(px) && std::isfinite(py))
          s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="{}"><title>{} {}: {}</title></circle>)",
                           x(px), y(py), kColors[i % 10], html_escape(se.name), html_escape(num(px)),
                           html_escape(fmt::format("{:.6g}", py)));
  }
  return s + legend(names, r + 10, t + 4) + "</svg>";
}

std::string svg_histogram(const HistogramChart& h, int width, int height) {
  const int bins = std::max(1, h.bins);
  std::vector<std::vector<double>> density;
  double top = 0;
  for (const auto& [name, values] : h.samples) {
    std::vector<double> c(bins, 0.0);
    for (float v : values) {
      if (!std::isfinite(v)) continue;
      const int k = std::clamp(static_cast<int>((v - h.lo) / (h.hi - h.lo) * bins), 0, bins - 1);
      c[k] += 1;
    }
    const double n = std::max<double>(1, values.size());
    for (auto& v : c) v /= n;
    top = std::max(top, *std::max_element(c.begin(), c.end()));
    density.push_back(std::move(c));
  }
  if (top == 0) return "<p class=\"note\">" + html_escape(h.title) + ": no data.</p>";
  const double l = 58, r = width - 150, t = 26, b = height - 40;
  const Axis x(h.lo, h.hi, l, r), y(0, top, b, t);
  std::string s = svg_open(width, height, h.title) + svg_axes(x, y, l, r, t, b, h.x_label, "fraction");
  std::vector<std::string> names;
  const double bin = (h.hi - h.lo) / bins, bw = x(h.lo + bin) - x(h.lo);
  for (size_t i = 0; i < density.size(); ++i) {
    names.push_back(h.samples[i].first + " (" + std::to_string(h.samples[i].second.size()) + ")");
    for (int k = 0; k < bins; ++k)
      if (density[i][k] > 0)
        s += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}" fill-opacity="0.5"><title>{}: {:.4f}</title></rect>)",
                         x(h.lo + bin * k), y(density[i][k]), bw, b - y(density[i][k]), kColors[i % 10],
                         html_escape(fmt::format("{:.6g}", h.lo + (h.hi - h.lo) * (k + 0.5) / bins)), density[i][k]);
  }
  return s + legend(names, r + 10, t + 4) + "</svg>";
}

std::string thumbnail_data_uri(const std::string& path, int max_side) {
  cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
  if (img.empty()) return "";
  const double scale = std::min(1.0, static_cast<double>(max_side) / std::max(img.cols, img.rows));
  if (scale < 1.0) {
    cv::Mat small;
    cv::resize(img, small, cv::Size(), scale, scale, cv::INTER_AREA);
    img = small;
  }
  std::vector<uchar> jpeg;
  if (!cv::imencode(".jpg", img, jpeg, {cv::IMWRITE_JPEG_QUALITY, 80})) return "";
  std::string b64(4 * ((jpeg.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), jpeg.data(), static_cast<int>(jpeg.size()));
  b64.resize(static_cast<size_t>(std::max(n, 0)));
  return "data:image/jpeg;base64," + b64;
}

std::vector<Chart> curves_from_metrics_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::ordered_json> records;  // keys in file order
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("phase")) records.push_back(std::move(j));
  }
  // A resumed run appends after the records of the run it resumed: keep, per step, the last record written.
  std::map<std::string, std::map<double, double>> loss, lr, ips, eval;
  std::vector<std::string> loss_order, eval_order;
  auto add = [](std::map<std::string, std::map<double, double>>& m, std::vector<std::string>* order,
                const std::string& name, double x, double y) {
    if (order && !m.count(name)) order->push_back(name);
    m[name][x] = y;
  };
  static const std::set<std::string> kNotLoss = {"phase", "epoch", "iter", "global_step", "lr", "ips", "seconds",
                                                  "batch_cost", "reader_cost"};
  for (const auto& j : records) {
    const std::string phase = j["phase"].get<std::string>();
    if (phase == "train" && j.contains("global_step")) {
      const double x = j["global_step"].get<double>();
      for (const auto& [k, v] : j.items())
        if (!kNotLoss.count(k) && v.is_number()) add(loss, &loss_order, k, x, v.get<double>());
      if (j.contains("lr") && j["lr"].is_number()) add(lr, nullptr, "lr", x, j["lr"].get<double>());
      if (j.contains("ips") && j["ips"].is_number()) add(ips, nullptr, "images/s", x, j["ips"].get<double>());
    } else if (phase == "eval" && j.contains("epoch")) {
      const double x = j["epoch"].get<double>();
      for (const auto& [k, v] : j.items())
        if (k != "phase" && k != "epoch" && k != "seconds" && v.is_number()) add(eval, &eval_order, k, x, v.get<double>());
    }
  }
  auto chart = [](const std::string& title, const std::string& xl, const std::map<std::string, std::map<double, double>>& m,
                  std::vector<std::string> order) {
    Chart c{title, xl, "", {}};
    if (order.empty())
      for (const auto& kv : m) order.push_back(kv.first);
    for (const auto& name : order) {
      Series s{name, {}};
      for (const auto& [x, y] : m.at(name)) s.points.emplace_back(x, y);
      c.series.push_back(std::move(s));
    }
    return c;
  };
  // "loss" (the total) first, then the terms as logged.
  std::stable_partition(loss_order.begin(), loss_order.end(), [](const std::string& s) { return s == "loss"; });
  std::vector<Chart> charts = {chart("Training loss", "iteration", loss, loss_order),
                               chart("Learning rate", "iteration", lr, {}),
                               chart("Throughput (images/s)", "iteration", ips, {})};
  // Eval metrics: fractions on one chart, losses and other scales on another.
  std::map<std::string, std::map<double, double>> frac, other;
  std::vector<std::string> frac_order, other_order;
  for (const auto& name : eval_order) {
    bool fraction = true;
    for (const auto& [x, y] : eval[name]) fraction = fraction && y >= 0 && y <= 1;
    (fraction ? frac : other)[name] = eval[name];
    (fraction ? frac_order : other_order).push_back(name);
  }
  charts.push_back(chart("Evaluation metrics", "epoch", frac, frac_order));
  if (!other.empty()) charts.push_back(chart("Evaluation (other scales)", "epoch", other, other_order));
  return charts;
}

QuerySelection select_queries(const std::vector<double>& ap, int64_t n, uint64_t seed) {
  std::vector<int64_t> valid;
  for (size_t i = 0; i < ap.size(); ++i)
    if (std::isfinite(ap[i])) valid.push_back(static_cast<int64_t>(i));
  std::vector<int64_t> by_ap = valid;
  std::stable_sort(by_ap.begin(), by_ap.end(), [&](int64_t a, int64_t b) { return ap[a] < ap[b]; });
  QuerySelection s;
  const int64_t m = static_cast<int64_t>(by_ap.size());
  const int64_t k = std::min(n, m);
  s.worst.assign(by_ap.begin(), by_ap.begin() + k);
  // Best: highest AP first; among equal APs the lower index first.
  std::vector<int64_t> desc = valid;
  std::stable_sort(desc.begin(), desc.end(), [&](int64_t a, int64_t b) { return ap[a] > ap[b]; });
  const std::set<int64_t> worst(s.worst.begin(), s.worst.end());
  for (int64_t q : desc) {
    if (static_cast<int64_t>(s.best.size()) == std::min(n, m - k)) break;
    if (!worst.count(q)) s.best.push_back(q);
  }
  std::vector<int64_t> rest;
  const std::set<int64_t> best(s.best.begin(), s.best.end());
  for (int64_t q : valid)
    if (!worst.count(q) && !best.count(q)) rest.push_back(q);
  std::mt19937_64 rng(seed);
  std::shuffle(rest.begin(), rest.end(), rng);
  rest.resize(std::min<size_t>(rest.size(), static_cast<size_t>(std::max<int64_t>(n, 0))));
  std::sort(rest.begin(), rest.end());
  s.random = rest;
  return s;
}

namespace {

const char* const kStyle = R"(body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-bottom:16px}.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eee}
.ct{font-size:13px;font-weight:600}.tk{font-size:11px;fill:#444}.note{color:#777;font-style:italic}
table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{border:1px solid #ddd;padding:4px 10px;text-align:right}
.grid{border-collapse:collapse;margin-bottom:8px}.grid td{vertical-align:top;padding:3px;text-align:center;font-size:11px}
.th{width:96px;height:96px;margin:auto;background:center/contain no-repeat #fafafa;box-sizing:border-box}.q{border:3px solid #333}.hit{border:3px solid #2a2}
.miss{border:3px solid #d22}.missing{background:#eee;color:#999;display:flex;align-items:center;justify-content:center}
.meta{color:#555;text-align:left!important;min-width:120px}pre{background:#f7f7f7;padding:10px;overflow:auto;max-height:480px;font-size:12px}
)";

}  // namespace

std::string render_html(const ReportData& data) {
  // Each distinct image is embedded once, as a CSS class with the thumbnail as its background; every cell
  // that shows it uses the class.
  std::map<std::string, std::string> classes;  // path -> class name ("" when unreadable)
  std::string image_css;
  auto image_class = [&](const std::string& path) -> const std::string& {
    auto it = classes.find(path);
    if (it != classes.end()) return it->second;
    const std::string uri = thumbnail_data_uri(path, data.thumbnail_side);
    std::string cls;
    if (!uri.empty()) {
      cls = "i" + std::to_string(classes.size());
      image_css += "." + cls + "{background-image:url(" + uri + ")}\n";
    }
    return classes.emplace(path, cls).first->second;
  };
  auto image_cell = [&](const std::string& path, const std::string& cls, const std::string& caption) {
    const std::string& img = image_class(path);
    const std::string title = html_escape(path);
    return "<td>" +
           (img.empty() ? "<div class=\"th missing " + cls + "\" title=\"" + title + "\">unreadable</div>"
                        : "<div class=\"th " + cls + " " + img + "\" role=\"img\" title=\"" + title +
                              "\" aria-label=\"" + title + "\"></div>") +
           caption + "</td>";
  };

  std::string h = "<h1>" + html_escape(data.title) + "</h1><div class=\"sub\">" + html_escape(data.subtitle) + "</div>\n";

  h += "<section id=\"curves\"><h2>Training curves</h2><div class=\"charts\">";
  for (const auto& c : data.curves) h += svg_line_chart(c);
  if (data.curves.empty()) h += "<p class=\"note\">No metrics.jsonl for this model.</p>";
  h += "</div></section>\n";

  h += "<section id=\"eval\"><h2>Evaluation</h2><p>" + html_escape(data.eval_note) + "</p>";
  h += "<table class=\"metrics\"><tr><th>metric</th><th>value</th></tr>";
  for (const auto& m : data.metrics)
    h += fmt::format("<tr><td>{}</td><td>{:.4f}</td></tr>", html_escape(m.name), m.value);
  h += "</table><div class=\"charts\">" + svg_line_chart(data.cmc) + svg_histogram(data.similarities) +
       "</div></section>\n";

  h += "<section id=\"ranked\"><h2>Ranked retrieval</h2><p>Query (black border) and its top gallery matches: "
       "<span style=\"color:#2a2\">green</span> = same id, <span style=\"color:#d22\">red</span> = different id. "
       "Score = similarity.</p>";
  for (const auto& [title, rows] : data.grids) {
    h += "<h3>" + html_escape(title) + "</h3>";
    if (rows.empty()) h += "<p class=\"note\">No queries.</p>";
    h += "<table class=\"grid\" data-grid=\"" + html_escape(title) + "\">";
    for (const auto& q : rows) {
      const std::string rank =
          q.first_match_rank > 0 ? "first true match: rank " + std::to_string(q.first_match_rank) : "no true match";
      h += "<tr class=\"qrow\"><td class=\"meta\">AP " + fmt::format("{:.3f}", q.ap) + "<br>" + html_escape(rank) +
           "<br>id " + html_escape(q.label) + "</td>";
      h += image_cell(q.path, "q", "<div>query</div>");
      for (size_t k = 0; k < q.top.size(); ++k) {
        const auto& it = q.top[k];
        h += image_cell(it.path, it.match ? "hit" : "miss",
                        fmt::format("<div>#{} {:.4f}</div><div>id {}</div>", k + 1, it.score, html_escape(it.label)));
      }
      h += "</tr>";
    }
    h += "</table>";
  }
  h += "</section>\n";

  h += "<section id=\"config\"><h2>Configuration</h2><pre>" + html_escape(data.config_yaml) + "</pre>";
  h += "<h2>Model</h2><pre>" + html_escape(data.model_description) + "</pre></section>\n";
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(data.title) +
         "</title><style>" + kStyle + image_css + "</style></head><body>\n" + h + "</body></html>\n";
}

}  // namespace featlearn::report
