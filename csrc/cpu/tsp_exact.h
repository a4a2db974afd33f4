// Exact solvers for small instances (internal to the solver).
#pragma once

#include "tsp_matrix.h"

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

// Shortest path (`path`) or tour under d (real cities only, d.m == d.n) by
// dynamic programming over subsets (Held-Karp), as cities in order. A state whose
// length plus a lower bound on the rest (each unvisited city still needs an
// edge into it) reaches `ub` is never expanded, so a good heuristic bound
// leaves most of the table untouched. Returns an empty order if nothing is
// shorter than `ub`.
template <typename T>
std::vector<int> held_karp(const Matrix<T>& d, bool path, double ub);

}  // namespace neumeta::tsp
