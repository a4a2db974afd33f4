#include "tsp_bound.h"

#include "tsp.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace neumeta::tsp {
namespace {

// The ascent, on LKH's schedule: the first period lasts max(n / 2,
// kBoundMinPeriod) steps, and the first step is kBoundFirstStep of the
// standard deviation of the spanning tree's edges (near the step that stops
// improving the bound on the matrices measured; LKH's fixed start needs many
// doublings to get there). The whole ascent takes about 4 first periods. It
// is shortened to at most kBoundWork / n^2 steps (the full schedule up to
// n = 632), to kSmallSteps up to kExactMaxN cities (the exact solver follows
// there and needs only a rough bound), and with a time budget to the steps
// that the first tree's time says fit in it.
constexpr int kBoundMinPeriod = 100;
constexpr double kBoundFirstStep = 0.1;
constexpr double kBoundWork = 4e8;
constexpr double kSmallSteps = 30;

bool settled(const std::vector<int>& excess) {
  return std::all_of(excess.begin(), excess.end(), [](int e) { return e == 0; });
}

// LKH's step rule: the step doubles while the bound improves in the first
// phase, then halves with the period; each move mixes the degree excess now
// (0.7) and one step ago (0.3).
struct LkhRule {
  static constexpr double kNow = 0.7, kBefore = 0.3;
  double first_step;  // set by the caller from the first tree
  int first_period;
  double affordable;  // steps
  int period = 0, p = 0, steps = 0;
  double t = 0;
  bool initial = true;

  bool next(double, bool better, const std::vector<int>& excess, double& step) {
    if (steps++ == 0) {
      t = first_step, period = first_period, p = 1;
    } else {
      if (better) {
        if (initial) t *= 2;
        if (p == period) period = std::min(2 * period, first_period);
      } else if (initial && p > period / 2) {
        initial = false, p = 0, t *= 0.75;  // the step overshoots: the first phase ends
      }
      if (++p > period || settled(excess) || steps >= affordable) period /= 2, t /= 2, p = 1;  // next period
    }
    step = t;
    return period > 0 && t > 0 && !settled(excess) && steps < affordable;
  }
};

}  // namespace

template <typename T>
double HeldKarp<T>::ascend(double budget) {
  const int n = d_.n;
  penalty.assign(n, 0.0);
  LkhRule rule{0, 0, 0};
  auto shorten_to = [&rule, n](double steps) {  // the schedule: about 4 first periods in `steps`
    rule.affordable = std::max(1.0, steps);
    rule.first_period = int(std::clamp(rule.affordable / 4, 1.0, double(std::max(n / 2, kBoundMinPeriod))));
  };
  shorten_to(n <= kExactMaxN ? kSmallSteps : kBoundWork / (double(n) * n));
  auto bound = [&](const std::vector<double>& pi, std::vector<int>& excess) {
    if (rule.steps > 0) return one_tree(pi, excess);
    const auto start = Clock::now();  // the first tree's time sizes the schedule to the budget
    const double b = one_tree(pi, excess);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    rule.first_step = kBoundFirstStep * spread_of_tree();
    if (budget >= 0) shorten_to(std::min(rule.affordable, budget / std::max(seconds, 1e-9)));
    return b;
  };
  const AscentResult r = subgradient_ascent(penalty, bound, rule);
  if (!r.last_is_best) spanning_tree(penalty);
  return r.bound;
}

template <typename T>
void HeldKarp<T>::set_penalty(const std::vector<double>& pi) {
  penalty = pi;
  spanning_tree(penalty);
}

template <typename T>
double HeldKarp<T>::spanning_tree(const std::vector<double>& pi) {
  const int n = d_.n;
  parent.assign(n, -1);
  parent_w.assign(n, 0.0);
  tree_order.clear();
  rest_.resize(n), rest_key_.resize(n), rest_parent_.resize(n), rest_pi_.resize(n);
  for (int c = 0; c < n; ++c) rest_[c] = c;
  auto rows = [&](int u) { return d_.w + size_t(u) * n; };
  auto visit = [&](int u, int p, double w) {
    tree_order.push_back(u);
    parent[u] = p;
    parent_w[u] = w;
  };
  return prim(n, rest_.data(), rest_key_.data(), rest_parent_.data(), rest_pi_.data(), pi.data(), rows, visit);
}

template <typename T>
double HeldKarp<T>::one_tree(const std::vector<double>& pi, std::vector<int>& excess) {
  const int n = d_.n;
  double bound = spanning_tree(pi);
  std::fill(excess.begin(), excess.end(), -2);
  for (int c = 0; c < n; ++c)
    if (parent[c] >= 0) ++excess[c], ++excess[parent[c]];
  int a = -1, b = -1;  // the cities the extra edges reach
  double extra = kInf;
  if (m_ > n) {
    for (int c = 0; c < n; ++c) {
      if (a < 0 || pi[c] < pi[a]) b = a, a = c;
      else if (b < 0 || pi[c] < pi[b]) b = c;
    }
    extra = pi[a] + pi[b];
  } else {
    a = tree_order.back();
    const T* w = d_.w + size_t(a) * n;
    for (int c = 0; c < n; ++c) {
      const double v = double(w[c]) + pi[c];
      if (c != a && c != parent[a] && v < extra) extra = v, b = c;
    }
    extra += pi[a];
  }
  ++excess[a], ++excess[b];
  bound += extra;
  for (int c = 0; c < n; ++c) bound -= 2 * pi[c];
  return bound;
}

template <typename T>
double HeldKarp<T>::spread_of_tree() const {
  double sum = 0, sq = 0;
  int k = 0;
  for (size_t c = 0; c < parent.size(); ++c)
    if (parent[c] >= 0) sum += parent_w[c], sq += parent_w[c] * parent_w[c], ++k;
  const double mean = sum / std::max(k, 1);
  return std::sqrt(std::max(0.0, sq / std::max(k, 1) - mean * mean));
}

template class HeldKarp<float>;
template class HeldKarp<double>;

}  // namespace neumeta::tsp
