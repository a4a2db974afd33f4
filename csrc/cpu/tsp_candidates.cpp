#include "tsp_candidates.h"

#include <algorithm>

namespace neumeta::tsp {

template <typename T>
Candidates alpha_candidates(const Matrix<T>& d, const HeldKarp<T>& tree) {
  const int n = d.n, m = d.m, k = std::min(kCandidates, m - 1);
  const bool dummy = m > n;
  const int kr = dummy ? k - 1 : k;  // candidates among the real cities
  const std::vector<double>& pi = tree.penalty;
  const std::vector<int>& parent = tree.parent;
  const std::vector<double>& parent_w = tree.parent_w;
  Candidates out;
  out.k = k;
  out.cities.assign(size_t(m) * k, 0);
  std::vector<double> alpha(kr), dist(kr), beta(n), lonely(n);
  std::vector<int> mark(n, -1);
  for (int a = 0; a < n; ++a) {
    // beta[b]: longest edge on the tree path a..b. Ancestors of a first, then
    // every other city from its parent, in Prim order (parents come first).
    beta[a] = -kInf;
    for (int u = a; parent[u] >= 0; u = parent[u]) {
      beta[parent[u]] = std::max(beta[u], parent_w[u]);
      mark[parent[u]] = a;
    }
    for (int b : tree.tree_order)
      if (b != a && mark[b] != a) beta[b] = std::max(beta[parent[b]], parent_w[b]);
    int* row = &out.cities[size_t(a) * k + (dummy ? 1 : 0)];
    int filled = 0;
    double near1 = kInf, near2 = kInf;
    const T* w = d.w + size_t(a) * n;
    for (int b = 0; b < n; ++b) {
      if (b == a) continue;
      const double v = double(w[b]), al = v + pi[a] + pi[b] - beta[b];
      if (v < near2) (v < near1 ? (near2 = near1, near1 = v) : near2 = v);
      if (filled == kr && (al > alpha[kr - 1] || (al == alpha[kr - 1] && v >= dist[kr - 1]))) continue;
      int i = filled < kr ? filled++ : kr - 1;  // insertion into the short list, sorted by (alpha, distance)
      for (; i > 0 && (alpha[i - 1] > al || (alpha[i - 1] == al && dist[i - 1] > v)); --i) {
        alpha[i] = alpha[i - 1], dist[i] = dist[i - 1];
        row[i] = row[i - 1];
      }
      alpha[i] = al, dist[i] = v;
      row[i] = b;
    }
    if (dummy) row[-1] = n;
    lonely[a] = near1 + near2;
  }
  if (dummy) {
    std::vector<int> ends(n);
    for (int c = 0; c < n; ++c) ends[c] = c;
    std::partial_sort(ends.begin(), ends.begin() + k, ends.end(), [&](int a, int b) {
      return lonely[a] != lonely[b] ? lonely[a] > lonely[b] : a < b;
    });
    std::copy(ends.begin(), ends.begin() + k, &out.cities[size_t(n) * k]);
  }
  out.dist.resize(out.cities.size());
  for (size_t i = 0; i < out.cities.size(); ++i) out.dist[i] = d(int(i / k), out.cities[i]);
  return out;
}

template <typename T>
Candidates search_candidates(const Matrix<T>& d, double ascent_budget) {
  HeldKarp<T> tree(d);
  tree.ascend(ascent_budget);
  return alpha_candidates(d, tree);
}

template Candidates alpha_candidates<float>(const Matrix<float>&, const HeldKarp<float>&);
template Candidates alpha_candidates<double>(const Matrix<double>&, const HeldKarp<double>&);
template Candidates search_candidates<float>(const Matrix<float>&, double);
template Candidates search_candidates<double>(const Matrix<double>&, double);

}  // namespace neumeta::tsp
