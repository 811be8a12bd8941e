"""sw/packing.py ``column_combine``: PackCNN's grouping exactly as the original code does it
(BradMcDanel/column-combine, ``packing.py``: ``pack_matrix``, ``pack_model``, ``fix_mask``; the rule is
restated in ../shared/papers.md section 1).

(a) hand-checked small matrices, the expected groups and pruned set worked out in the comments;
(b) a plain, slow transcription of the original's loop (every pair figure recomputed after each merge,
    as its ``compute_dists`` / ``compute_metric`` do) compared with ``column_combine`` on a few hundred
    random small matrices and settings: same groups in the same order, and the same pruned set after
    ``conflict_prune`` as the original's ``fix_mask`` gives.

Conventions of the hand cases: a column is written as the set of rows where it is nonzero; "both-zero"
of a pair = rows where neither group has a nonzero (the original's ``density_dist``, the metric it
minimises); "pruned" of a pair = sum over rows of max(0, u + v - 1) (its ``overlap_dist``), which must
be <= floor(gamma * rows); the merged size must be <= alpha.
"""
import math

import numpy as np
import pytest

from sparsyn.sw.packing import Grouping, column_combine, conflict_prune


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def support(rows: int, cols: list[set[int]]) -> np.ndarray:
    """rows x len(cols) bool matrix; column j is nonzero in the rows of ``cols[j]``."""
    s = np.zeros((rows, len(cols)), dtype=bool)
    for j, rs in enumerate(cols):
        s[sorted(rs), j] = True
    return s


def pruned_set(w: np.ndarray, groups, rows_per_section: int = 4) -> set[tuple[int, int]]:
    """(row, column) of the nonzeros ``conflict_prune`` removes under the shared grouping ``groups``."""
    g = Grouping(rows_per_section, max([len(x) for x in groups] + [1]), False, [list(groups)], shared=True)
    out, _ = conflict_prune(w, g)
    return {(int(r), int(c)) for r, c in zip(*np.nonzero((w != 0) & (out == 0)))}


# ---------------------------------------------------------------------------------------------
# (a) hand-checked cases
# ---------------------------------------------------------------------------------------------
def test_first_group_first_not_the_globally_best_pair():
    # 4 rows, alpha 2, gamma 0 (no weight may be lost).
    #   c0 {0}   c1 {0,1}   c2 {1}   c3 {2,3}
    # feasible pairs (no shared row): (0,2) both-zero 2 (rows 2,3); (0,3) both-zero 1 (row 1);
    # (1,3) both-zero 0; (2,3) both-zero 1. (0,1) and (1,2) share a row.
    # The globally best pair is (1,3), and a global best-pair greedy ends with (1,3), (0,2): 2 groups.
    # The original takes the FIRST group with a feasible partner, c0, and gives it its best partner,
    # c3 (1 < 2). Then {0,3} is full (alpha 2); c1 conflicts with c2 (row 1): nothing else merges.
    sup = support(4, [{0}, {0, 1}, {1}, {2, 3}])
    assert column_combine(sup, 2, 0.0) == [(0, 3), (1,), (2,)]


def test_one_group_filled_at_a_time_and_ties_to_the_lowest_index():
    # 4 rows, alpha 3, gamma 0.   c0 {0}   c1 {1}   c2 {2,3}   c3 {1}
    # step 1, group {c0} (rows {0}): partners c1 -> both-zero 2 (rows 2,3), c2 -> 1 (row 1),
    #         c3 -> 2: best c2. Group {0,2} occupies rows {0,2,3} and keeps c0's place.
    # step 2, the same group again (size 2 < 3): c1 -> both-zero 0, c3 -> 0: a tie, the lower
    #         index c1 wins. {0,1,2} is full; c3 has no partner left.
    sup = support(4, [{0}, {1}, {2, 3}, {1}])
    assert column_combine(sup, 3, 0.0) == [(0, 1, 2), (3,)]
    # with alpha 2 the first group stops at {0,2}; then {c1} takes c3? no: both have row 1 (gamma 0),
    # so c1 and c3 stay alone
    assert column_combine(sup, 2, 0.0) == [(0, 2), (1,), (3,)]
    # three identical singletons: c0's partners c1 and c2 tie (both-zero 3), c1 is taken
    sup = support(4, [{0}, {1}, {2}])
    assert column_combine(sup, 2, 0.0) == [(0, 1), (2,)]


def test_gamma_caps_pruned_weights_not_conflicting_rows():
    # 10 rows, gamma 0.1: floor(0.1 * 10) = 1 weight may be lost per merged group.
    #   c0 {0}   c1 {0}   c2 {0}   c3 {5}
    # step 1, group {c0}: c1 -> pruned 1 (row 0: 1+1-1), both-zero 9; c2 -> pruned 1, both-zero 9;
    #         c3 -> pruned 0, both-zero 8 (rows except 0 and 5): c3 wins -- the metric is both-zero,
    #         the pruned count only decides feasibility.
    # step 2, group {0,3}: c1 -> pruned 1, both-zero 8; c2 -> the same; tie -> c1. {0,1,3} loses
    #         one weight in row 0.
    # step 3 (alpha 4), group {0,1,3} with c2: row 0 would hold 3 nonzeros -> 2 weights lost > 1:
    #         infeasible. (A cap on *conflicting rows* -- still one row -- would allow it: the
    #         two rules agree only at alpha 2.) c2 stays alone.
    w = np.zeros((10, 4), dtype=np.int64)
    w[0, 0], w[0, 1], w[0, 2], w[5, 3] = 5, 3, 7, 2
    sup = w != 0
    assert column_combine(sup, 4, 0.1) == [(0, 1, 3), (2,)]
    assert column_combine(sup, 3, 0.1) == [(0, 1, 3), (2,)]
    # conflict pruning keeps the largest magnitude per (row, group): in row 0 of {0,1,3}, 5 beats 3
    assert pruned_set(w, [(0, 1, 3), (2,)]) == {(0, 1)}
    # gamma 0.2 -> 2 weights may be lost: step 3 is feasible now (row 0: 2 lost), one group
    assert column_combine(sup, 4, 0.2) == [(0, 1, 2, 3)]
    # row 0 keeps 7 (c2) and loses 5 and 3
    assert pruned_set(w, [(0, 1, 2, 3)]) == {(0, 0), (0, 1)}
    # gamma 0: c0 merges with c3 only; c1 with nothing but c2 (row 0 again): all alone
    assert column_combine(sup, 4, 0.0) == [(0, 3), (1,), (2,)]


def test_pruned_weights_count_over_the_whole_merged_group():
    # 4 rows, gamma 0.5: floor(2.0) = 2 weights per group. alpha 4.
    #   c0 {0,1}   c1 {0}   c2 {1}   c3 {2}
    # step 1, group {c0}: c1 -> pruned 1, both-zero 2; c2 -> pruned 1, both-zero 2; c3 -> pruned 0,
    #         both-zero 1 (row 3): c3.   {0,3} rows {0,1,2}.
    # step 2: c1 -> pruned 1, both-zero 1; c2 -> pruned 1, both-zero 1; tie -> c1.  {0,1,3}: 1 lost.
    # step 3: c2 -> pruned = 1 already lost + 1 in row 1 = 2 <= 2: feasible.  {0,1,2,3}: 2 lost.
    sup = support(4, [{0, 1}, {0}, {1}, {2}])
    assert column_combine(sup, 4, 0.5) == [(0, 1, 2, 3)]
    # gamma 0.25: 1 weight per group; step 3 would make it 2: c2 stays alone
    assert column_combine(sup, 4, 0.25) == [(0, 1, 3), (2,)]


def test_alpha_limit():
    # 4 rows, gamma 1 (4 weights may go), five columns all in row 0: every pair is feasible, and all
    # both-zero figures are 3, so ties pick the next column in order.
    sup = support(4, [{0}] * 5)
    assert column_combine(sup, 2, 1.0) == [(0, 1), (2, 3), (4,)]
    # alpha 3: {0,1,2} loses 2 weights in row 0, then {3,4} 1
    assert column_combine(sup, 3, 1.0) == [(0, 1, 2), (3, 4)]
    # gamma 0.5 (2 weights): the same groups -- 2 lost is allowed, a fourth member would make it 3
    assert column_combine(sup, 5, 0.5) == [(0, 1, 2), (3, 4)]
    # alpha 5 and gamma 1: all five in one group (4 weights lost)
    assert column_combine(sup, 5, 1.0) == [(0, 1, 2, 3, 4)]


def test_windows():
    # 2 rows, alpha 2, gamma 0.   c0 {0}  c1 {0}  c2 {1}  c3 {1}  c4 {0}  c5 {1}
    # whole matrix: {c0} -> c2 and c3 both leave both-zero 0, tie -> c2; {c1} -> c3; {c4} -> c5.
    sup = support(2, [{0}, {0}, {1}, {1}, {0}, {1}])
    assert column_combine(sup, 2, 0.0) == [(0, 2), (1, 3), (4, 5)]
    # windows of 3 columns ({0,1,2} and {3,4,5}, combined separately, as the original's section_size):
    # window 1: {c0} -> c2; c1 alone.   window 2: {c3} -> c4 (c5 shares row 1); c5 alone.
    assert column_combine(sup, 2, 0.0, window=3) == [(0, 2), (1,), (3, 4), (5,)]
    # a window as wide as the matrix (or wider) is the whole matrix
    assert column_combine(sup, 2, 0.0, window=6) == column_combine(sup, 2, 0.0, window=100)
    assert column_combine(sup, 2, 0.0, window=6) == [(0, 2), (1, 3), (4, 5)]
    # the gamma limit is floor(gamma * all rows) in every window (pack_model: int(overlap_pct * B))
    sup = support(10, [{0}, {0}, {0}, {0}])
    assert column_combine(sup, 4, 0.1, window=2) == [(0, 1), (2, 3)]


def test_zero_columns_skipped_and_trivial_inputs():
    # only columns with a nonzero take part (the original's col_idxs); a zero column is in no group
    sup = support(3, [set(), {0}, set(), {1}])
    assert column_combine(sup, 2, 0.0) == [(1, 3)]
    assert column_combine(np.zeros((3, 4), dtype=bool), 4, 0.5) == []
    assert column_combine(support(3, [{0, 1}]), 4, 0.5) == [(0,)]
    assert column_combine(np.zeros((3, 0), dtype=bool), 4, 0.5) == []


# ---------------------------------------------------------------------------------------------
# (b) the original's loop, transcribed plainly (numpy instead of torch on the GPU)
# ---------------------------------------------------------------------------------------------
BIG = 1e10


def _densify(mat: np.ndarray, col_idxs, row_idxs) -> np.ndarray:
    """The original's ``densify``: nonzero counts of every (row group, column group)."""
    cols = np.stack([mat[:, c].sum(axis=1) for c in col_idxs], axis=1)
    return np.stack([cols[r].sum(axis=0) for r in row_idxs], axis=0)


def original_pack_matrix(mat: np.ndarray, max_paths: int, max_overlap: int):
    """``pack_matrix(mat, max_paths, max_overlap)`` of the original, every figure recomputed per merge."""
    mat = (np.asarray(mat) != 0).astype(np.float64)
    col_idxs = [[i] for i in range(mat.shape[1]) if mat[:, i].sum() > 0]     # only columns with nonzeros
    row_idxs = [[i] for i in range(mat.shape[0]) if mat[i].sum() > 0]        # only rows with nonzeros
    while len(col_idxs) > 1:                                                 # (the original: while True)
        d = _densify(mat, col_idxs, row_idxs).T                              # groups x rows
        # compute_dists: overlap_dist = sum_rows clamp(u + v - 1, 0); diagonal and pairs of more than
        # max_paths columns set to 1e10
        dists = np.clip(d[None, :, :] + d[:, None, :] - 1, 0, BIG).sum(axis=2)
        np.fill_diagonal(dists, BIG)
        paths = np.array([len(c) for c in col_idxs], dtype=np.float64)
        dists[(paths[None, :] + paths[:, None]) > max_paths] = BIG
        # compute_metric: infeasible -> 1e10, feasible -> 0, plus density_dist (rows where both are 0)
        metric = np.where(dists > max_overlap, BIG, 0.0)
        metric += ((d[None, :, :] + d[:, None, :]) == 0).sum(axis=2)
        if dists.min() > max_overlap:
            break
        vals, idxs = metric.min(axis=0), metric.argmin(axis=0)              # argmin: first among ties
        c1 = int(np.nonzero(vals < 1e9)[0][0])
        c2 = int(idxs[c1])
        col_idxs[c1].extend(col_idxs[c2])
        col_idxs.pop(c2)
    return row_idxs, col_idxs


def original_pack_layer(w: np.ndarray, alpha: int, gamma: float, section_size: int = 0):
    """``pack_model`` for one layer: ``overlap = int(gamma * B)``, columns combined per section of
    ``section_size`` columns (0: one section, i.e. the earlier version without sections)."""
    b, k = w.shape
    overlap = int(gamma * b)
    size = section_size or max(k, 1)
    col_idxs = []
    for start in range(0, k, size):
        _, cols = original_pack_matrix(w[:, start:start + size], alpha, overlap)
        col_idxs.extend([[c + start for c in g] for g in cols])
    return col_idxs


def original_fix_mask(w: np.ndarray, col_idxs) -> set[tuple[int, int]]:
    """``fix_mask``: in each (row, group) every entry but the largest |w| is masked; returns the masked
    nonzeros. (Over every row with a nonzero; the original's sectioned ``pack_model`` passes the last
    section's ``row_idxs`` here, which can leave out rows with no nonzero in the last section -- a
    slip the documented rule does not have.)"""
    out = set()
    for r in range(w.shape[0]):
        for cols in col_idxs:
            vals = np.abs(w[r, cols])
            if len(cols) <= 1:
                continue
            keep = int(np.argsort(vals, kind="stable")[-1])
            out |= {(r, int(c)) for i, c in enumerate(cols) if i != keep and w[r, c] != 0}
    return out


GAMMAS = (0.0, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 1.75)


def _cases(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        rows = int(rng.integers(1, 13))
        cols = int(rng.integers(1, 31))
        density = float(rng.choice([0.05, 0.1, 0.2, 0.35, 0.5, 0.7]))
        alpha = int(rng.choice([2, 3, 4, 5, 8, 16]))
        gamma = float(rng.choice(GAMMAS))
        window = int(rng.choice([0, 0, 0, 4, 7, 16]))
        sup = rng.random((rows, cols)) < density
        # distinct magnitudes (the original's argsort leaves ties to the sort), random signs
        mags = rng.permutation(rows * cols).reshape(rows, cols) + 1
        w = np.where(sup, mags * rng.choice([-1, 1], (rows, cols)), 0).astype(np.int64)
        yield rows, cols, alpha, gamma, window, w


def test_gamma_limit_same_as_the_original_on_these_cases():
    # the transcription uses the original's int(gamma * B); column_combine floor(gamma * rows) with
    # a 1e-9 guard. They agree for every (gamma, rows) the comparison below draws.
    for g in GAMMAS:
        for rows in range(1, 13):
            assert int(g * rows) == math.floor(g * rows + 1e-9), (g, rows)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_original_loop_on_random_matrices(seed):
    """500 random small matrices and settings (4 x 125): column_combine gives the original's groups
    in the original's order, and conflict_prune prunes exactly what the original's fix_mask masks."""
    merged = 0
    for rows, cols, alpha, gamma, window, w in _cases(125, seed):
        expect = original_pack_layer(w, alpha, gamma, window)
        got = column_combine(w != 0, alpha, gamma, window=window)
        case = dict(rows=rows, cols=cols, alpha=alpha, gamma=gamma, window=window, w=w.tolist())
        assert got == [tuple(sorted(g)) for g in expect], case
        assert pruned_set(w, got) == original_fix_mask(w, expect), case
        merged += sum(len(g) > 1 for g in got)
    assert merged > 200          # the cases do combine columns, not only leave them alone


def test_matches_the_original_loop_on_a_larger_matrix():
    """One 48 x 120 matrix at alpha 8 with gamma caps that bind (5 %, 25 %) and windows of 32."""
    rng = np.random.default_rng(7)
    sup = rng.random((48, 120)) < 0.15
    w = np.where(sup, rng.permutation(48 * 120).reshape(48, 120) + 1, 0)
    for gamma, window in ((0.0, 0), (0.05, 0), (0.25, 0), (0.25, 32)):
        expect = original_pack_layer(w, 8, gamma, window)
        got = column_combine(sup, 8, gamma, window=window)
        assert got == [tuple(sorted(g)) for g in expect], (gamma, window)
        assert pruned_set(w, got) == original_fix_mask(w, expect)
