// Exact shortest closed tour for small dense instances (internal to the solver).
#pragma once

#include <cstdint>
#include <vector>

namespace neumeta::tsp {

// Most cities branch_and_bound takes (its sets are 32-bit masks).
constexpr int kBranchMaxCities = 24;

// Shortest closed tour through the m cities of the symmetric row-major m x m
// matrix `w` that is shorter than `ub`, as cities in order from city m - 1;
// empty if there is none. Depth-first branch and bound: spanning-tree lower
// bounds on Held-Karp penalised distances, and a memo of the shortest prefix
// seen per (visited set, last city). Gives up after `max_nodes` search nodes:
// then it returns an empty order and sets *complete to false.
std::vector<int> branch_and_bound(const std::vector<double>& w, int m, double ub, int64_t max_nodes, bool* complete);

}  // namespace neumeta::tsp
