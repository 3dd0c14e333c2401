"""The piano-shapes encoder's greedy pursuit in numpy: the same picks as the preset's encoder.onnx.

The graph (a trace of ``sidl.training.shape_pursuit.ShapeEncoder``) unrolls the pursuit into ~660
small onnxruntime nodes; their fixed cost per node, not the arithmetic, was most of a live piano
bar (0.85 ms of 1.2). Here the same rule runs on the candidates that can still win, as integer
counts (0.2 ms):

    gain of a placement = onsets it explains (not yet explained) - wrong onsets
    pick the largest 64 * explained - 65 * wrong, ties to the lowest candidate (onset rank * A + shape)

which is what the graph's float64 score (``base + 64 * expl``, a 1e-6 tie-break) orders by. The
tables are the graph's own initializers (``tables.*``), read from encoder.onnx; ``Preset`` checks
this code against the graph on a busy test window at load (``check_window``) and keeps the graph
if they disagree in one bit. Amplitudes are means of float32 velocities, so the order onnxruntime
adds them in is reproduced too (``eigen_sum_columns``).

Only numpy here (realtime never imports torch or onnx).
"""
from __future__ import annotations

import numpy as np

K = 88                  # keys: a transposition is a shape's lowest key 0..87
MAX_ONSETS = 24         # onsets per beat that anchor candidates (ShapeEncoder's MAX_ONSETS)
RUN_CAP = 256           # note lengths read from the holds up to 256 + 1 steps (its pointer doubling)
MAX_LENGTH = 255        # longest length a code entry stores
HEAD_CELLS = 4          # cells every candidate is first checked on (the pre-filter in encode)
MAX_CELLS = 15          # longest shape whose sums are reproduced (three packets, see sum_packets)
TABLES = ("tables.cm", "tables.first_s", "tables.first_p", "tables.rel", "tables.extent", "tables.span")


class ShapePursuit:
    """x (steps, 264) float32, k -> idx, val (beats, k): encoder.onnx's outputs, transposed.

    ``cm`` (A, Cmax) cell mask, ``first_s``/``first_p`` (A,) the anchor cell's step and key offset,
    ``rel`` (A, Cmax) each cell's grid offset from the anchor (step * K + key), ``extent``/``span``
    (A,) steps and keys a shape covers, ``L`` steps per beat.
    """

    def __init__(self, cm, first_s, first_p, rel, extent, span, L: int, k_max: int):
        self.cm = np.asarray(cm) > 0
        self.A, self.Cmax = self.cm.shape
        if not self.cm[:, 0].all():
            raise ValueError("a shape without its anchor cell (cell 0)")
        self.L, self.k_max = int(L), int(k_max)
        self.places = self.A * self.L * K
        self.n_cells = self.cm.sum(1).astype(np.int64)
        first_s, first_p = np.asarray(first_s, np.int64), np.asarray(first_p, np.int64)
        extent, span = np.asarray(extent, np.int64), np.asarray(span, np.int64)
        self.rel = np.where(self.cm, np.asarray(rel, np.int64), 0)
        # The placement of shape a anchored on beat cell (s, p) fits when s - first_s[a] lies in
        # [0, L - extent[a]] and p - first_p[a] in [0, K - span[a]]: a table of fitting shapes per
        # anchor cell, made once, so a bar only gathers.
        s = np.arange(self.L)[:, None, None]
        p = np.arange(K)[None, :, None]
        dt, t = s - first_s, p - first_p                                      # (L, K, A)
        fits = (dt >= 0) & (t >= 0) & (dt + extent <= self.L) & (t + span <= K)
        self.fits = fits.reshape(self.L * K, self.A)
        self.first_s, self.first_p = first_s, first_p
        self.sum_columns = eigen_sum_columns(self.Cmax)
        self.sum_packets = sum_packets(self.Cmax)
        # (Cmax + 1, A): each shape's cells from its anchor, one more always empty (the sum
        # orders' padding); empty cells are sent, per window, onto the zero padding past the grid
        self.rel_t = np.ascontiguousarray(np.pad(self.rel, ((0, 0), (0, 1))).T)
        self.cm_t = np.ascontiguousarray(np.pad(self.cm, ((0, 0), (0, 1))).T)
        self._rel_for: dict[int, np.ndarray] = {}

    @classmethod
    def from_graph(cls, encoder_onnx: bytes, L: int, k_max: int) -> "ShapePursuit":
        t = read_initializers(encoder_onnx, TABLES)
        return cls(*(t[n] for n in TABLES), L=L, k_max=k_max)

    def _cell_offsets(self, n_cells: int) -> np.ndarray:
        """rel_t with empty cells at +n_cells: anchored anywhere on a grid of n_cells cells,
        they land on its zero padding (cells n_cells .. 2 n_cells)."""
        rel = self._rel_for.get(n_cells)
        if rel is None:
            if len(self._rel_for) > 16:
                self._rel_for.clear()
            rel = self._rel_for[n_cells] = np.where(self.cm_t, self.rel_t, n_cells)
        return rel

    def encode(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps, 264) -> idx (beats, k) int64, val (beats, k) float32: the graph's outputs,
        transposed (``Preset.encode_bar``'s layout)."""
        L, LK = self.L, self.L * K
        NB = len(x) // L
        T = NB * L
        idx = np.full((NB, k), self.places, np.int64)        # an empty slot: placement 0, length 1
        val = np.zeros((NB, k), np.float32)
        G = T * K                                             # grid cells: step * K + key
        onset = x[:T, :K] > 0.5
        O = np.zeros(2 * G + 1, np.int32)                     # the grid, then zero padding
        O[:G] = onset.reshape(-1)
        on = np.flatnonzero(O[:G])                            # by beat, then step, then key
        if not len(on):
            return idx, val
        beat = on // LK
        rank = np.arange(len(on)) - np.searchsorted(on, beat * LK)
        if rank.max() >= MAX_ONSETS:                          # only a beat's first onsets anchor
            on, beat = on[rank < MAX_ONSETS], beat[rank < MAX_ONSETS]
        # candidates: every shape that fits anchored on each onset, by beat, onset rank, shape,
        # which is the graph's tie-break order (the first of equal scores wins)
        o_i, a = np.nonzero(self.fits[on - beat * LK])
        # Explained onsets only fall, and a pick needs gain >= 1, which outscores any gain <= 0:
        # a placement that cannot reach gain 1 (2 * explained <= cells) is never picked, nor stops
        # a pick. Left out, in two steps: most shapes have at most HEAD_CELLS cells, so their first
        # cells decide, and the others' are a bound (explained <= first cells' + the rest); only
        # what passes gets all Cmax + 1 rows (a third of a bar's cost, done for every candidate).
        # (np.take: a third of the cost of fancy indexing at these sizes)
        offsets = self._cell_offsets(G)
        n = self.n_cells[a]
        head = 1 + np.take(O, np.take(offsets[1:HEAD_CELLS], a, axis=1) + on[o_i]).sum(0)   # (cell 0: the onset)
        maybe = np.flatnonzero(2 * (head + np.maximum(n - HEAD_CELLS, 0)) > n)
        o_i, a, n = o_i[maybe], a[maybe], n[maybe]
        cells = np.take(offsets, a, axis=1) + on[o_i]                 # (Cmax + 1, NC) grid cells
        expl = np.take(O, cells).sum(0)
        can = np.flatnonzero(2 * expl > n)
        o_i, a, cells, expl = o_i[can], a[can], np.take(cells, can, axis=1), expl[can]
        wrong = n[can] - expl
        c_beat = beat[o_i]
        bounds = np.concatenate(([0], np.flatnonzero(c_beat[1:] != c_beat[:-1]) + 1, [len(c_beat)]))
        starts, width = bounds[:-1], bounds[1:] - bounds[:-1]
        beats_with = c_beat[starts]
        # score = 64 * explained - 65 * wrong, scaled so that a tie-break below one point (earlier
        # candidates of a beat first) keeps every score of a beat distinct
        scale = np.int64(len(c_beat) + 1)
        base = np.repeat(bounds[1:], width) - np.arange(len(c_beat)) - 65 * scale * wrong
        R = O.copy()
        picks, pick_beats = [], []
        for slot in range(min(k, self.k_max)):
            if slot:
                expl = np.take(R, cells).sum(0)
            score = expl * (64 * scale) + base
            # each beat's maximum is met exactly once
            best = np.flatnonzero(score == np.repeat(np.maximum.reduceat(score, starts), width))
            act = expl[best] > wrong[best]
            b = beats_with
            if not act.all():
                if not act.any():
                    break
                best, b = best[act], b[act]
            picks.append(best)
            pick_beats.append(b)
            R[cells[:, best]] = 0
        if not picks:
            return idx, val
        slot = np.repeat(np.arange(len(picks)), [len(p) for p in picks])
        best, b = np.concatenate(picks), np.concatenate(pick_beats)
        # amplitude and length: means over the shape's cells that are onsets of the music (all of
        # them, explained before or not), summed in onnxruntime's order
        cell = cells[self.sum_columns[(b * self.Cmax) % 4], best[:, None]]      # (n, W)
        true = O[cell].astype(np.float32)
        hits = np.maximum(true.sum(1), np.float32(1))
        on_cell = np.minimum(cell, G - 1)                     # (padding cells count 0 below)
        step, key = on_cell // K, on_cell % K
        v = _tree_sum(x[step, K + key] * true, self.sum_packets) / hits
        d = _tree_sum(note_lengths_at(x, onset, step, key) * true, self.sum_packets) / hits
        aa = a[best]
        anchor = cells[0, best] - (b * L + self.first_s[aa]) * K    # anchor cell = shape's first
        j = (aa * L + anchor // K) * K + anchor % K - self.first_p[aa]
        idx[b, slot] = j + self.places * np.minimum(np.maximum(np.rint(d), 1), MAX_LENGTH).astype(np.int64)
        val[b, slot] = v
        return idx, val


def check_window(L: int, beats: int = 8) -> np.ndarray:
    """A fixed busy piano grid of ``beats`` beats (steps of ``L`` per beat) that ``Preset`` encodes
    both ways at load: sparse to dense beats (past MAX_ONSETS onsets), codec velocities, holds.
    Summing velocities left to right, or for another alignment, changes 3-8 of its amplitudes."""
    T = beats * L
    density = np.repeat(np.linspace(0.05, 0.3, beats), L)[:, None]
    onset = _uniform(T, 1) < density
    x = np.zeros((T, 3 * K), np.float32)
    x[:, :K] = onset
    x[:, K:2 * K] = np.where(onset, (1 + np.floor(_uniform(T, 2) * 127)) / 127.0, 0)
    x[:, 2 * K:] = _uniform(T, 3) < 0.6
    return x


def _uniform(T: int, stream: int) -> np.ndarray:
    """(T, K) fixed uniforms in [0, 1) (splitmix64 of the cell index): no numpy.random, whose
    first import would cost a preset's load ~5 ms."""
    z = np.arange(T * K, dtype=np.uint64) + np.uint64(stream << 40)
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53).reshape(T, K)


def eigen_sum_columns(C: int) -> np.ndarray:
    """(4, W) column orders that make ``_tree_sum`` add a row of ``C`` floats exactly as Eigen's
    vectorised sum (onnxruntime's ReduceSum over the last axis, SSE packets of 4) does, for each
    row start's offset from 16-byte alignment (in floats, 0..3). Column ``C`` is an empty cell.

    Eigen (``redux_impl``, linear vectorised traversal) skips the unaligned leading floats, adds
    the aligned packets of 4 lane-wise in two accumulators (packets 0, 2, ... and 1, 3, ...),
    adds those, then the odd last packet; folds the lanes as (l0 + l2) + (l1 + l3); then adds
    the leading and trailing floats in order. A row too short for a packet is added left to
    right. Float addition is not associative, so the order decides the last bit of a
    placement's mean velocity. The first ``4 * sum_packets(C)`` columns are packet lanes; a
    row with one packet fewer than that gets an empty (zero) packet last, which adds exactly.
    (Read off onnxruntime 1.32's outputs on POP909 beats: every one matched, and no single
    order did; ``Preset`` checks it again at every load.)
    """
    P = sum_packets(C)
    orders = []
    for misalign in range(4):
        start = min(C, (4 - misalign) % 4)             # floats before the first aligned packet
        n = (C - start) // 4                           # whole aligned packets (P or P - 1)
        if n:
            packets = list(range(start, start + 4 * n)) + [C] * (4 * (P - n))
            order = packets + list(range(start)) + list(range(start + 4 * n, C))
        else:                                          # no packet: a0 + a1 + ... left to right
            order = list(range(min(C, 2))) + [C] * (4 - min(C, 2)) + list(range(2, C))
        orders.append(order)
    out = np.full((4, max(map(len, orders))), C, np.int64)
    for misalign, order in enumerate(orders):
        out[misalign, :len(order)] = order
    return out


def sum_packets(C: int) -> int:
    """Packet slots of ``eigen_sum_columns(C)``: the most aligned packets a row of C floats has
    (at least one, the short rows' pseudo packet). Rows may have one fewer, padded with a zero
    packet, which is exact only up to 3 slots: 4 real packets add as (p0 + p2) + (p1 + p3), 3 as
    (p0 + p1) + p2, and no zero packet turns one order into the other."""
    if C > MAX_CELLS:
        raise ValueError(f"shapes of {C} cells: the sum order of rows of more than {MAX_CELLS} floats is not reproduced")
    return max(1, C // 4)


def _tree_sum(q: np.ndarray, packets: int) -> np.ndarray:
    """Each row of q (columns laid out by eigen_sum_columns) summed in Eigen's order, in float32."""
    lanes = q[:, :4]
    if packets > 1:
        lanes = lanes + q[:, 4:8]                      # the two accumulators (packets 0 and 1)
        if packets > 2:
            lanes = lanes + q[:, 8:12]                 # the odd last packet
    s = (lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])
    for c in range(4 * packets, q.shape[1]):
        s += q[:, c]
    return s


def note_lengths_at(x: np.ndarray, onset: np.ndarray, step: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Length in steps of the notes starting at grid cells (step, key) (float32, any shape): 1 +
    the holds that continue each (at most RUN_CAP), as the graph's ``note_lengths`` reads them.
    ``onset`` is x's (T, K) onset > 0.5."""
    T = len(onset)
    cont = (x[:T, 2 * K:3 * K] > 0.5) > onset               # a hold continuing the note before
    # for every step, the first step at or after it that does not continue a note (T: the end)
    steps = np.arange(T, dtype=np.int32)[:, None]
    stop = np.empty((T + 1, K), np.int32)
    stop[T] = T
    stop[:T] = cont * (T - steps) + steps
    stop = np.minimum.accumulate(stop[::-1], axis=0)[::-1]
    return (1 + np.minimum(np.take(stop, (step + 1) * K + key) - step - 1, RUN_CAP)).astype(np.float32)


# ----------------------------------------------------------------- ONNX initializers, no onnx package


def read_initializers(model: bytes, names) -> dict[str, np.ndarray]:
    """The named initializers of an ONNX model (raw_data tensors), from its protobuf bytes.

    A ModelProto's graph is field 7; a GraphProto's initializers field 5; a TensorProto holds
    dims (1), data_type (2), name (8) and raw_data (9). KeyError when one is missing or not raw.
    """
    wanted, found = set(names), {}
    graph = _fields(memoryview(model), want=7)
    for g in graph:
        for t in _fields(g, want=5):
            dims, dtype, name, raw = [], None, None, None
            for f, v in _iter_fields(t):
                if f == 1:
                    dims.extend(_varints(v) if isinstance(v, memoryview) else [v])
                elif f == 2:
                    dtype = v
                elif f == 8:
                    name = bytes(v).decode()
                elif f == 9:
                    raw = bytes(v)
            if name in wanted and raw is not None and dtype in _DTYPES:
                found[name] = np.frombuffer(raw, _DTYPES[dtype]).reshape(dims).copy()
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"the model has no raw initializer {sorted(missing)}")
    return found


_DTYPES = {1: np.dtype("<f4"), 6: np.dtype("<i4"), 7: np.dtype("<i8"), 9: np.dtype("?"), 11: np.dtype("<f8")}   # raw_data is little-endian


def _read_varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _iter_fields(buf: memoryview):
    i, n = 0, len(buf)
    while i < n:
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            v, i = buf[i:i + size], i + size
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not readable")
        yield field, v


def _fields(buf: memoryview, want: int) -> list[memoryview]:
    return [v for f, v in _iter_fields(buf) if f == want and isinstance(v, memoryview)]


def _varints(buf: memoryview) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        v, i = _read_varint(buf, i)
        out.append(v)
    return out
