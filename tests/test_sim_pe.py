"""PE bench: random entries/activations/partial sums incl. the extremes, in Icarus and Verilator."""
import numpy as np
import pytest

from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes.base import make_product
from sparsyn.sim.runner import BenchFailure, build, run_bench
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer, get_scheme
from sparsyn.sw.testing import pack_layer, random_quant_layer

PSUM_MAX = (1 << 31) - (1 << 16)  # partial sums the contract allows plus one product still fit 32 bits


def pe_vectors(rng, packed, layer, lanes, count, model=None):
    """Entries taken from the scheme's real tile program (plus the extremes), activations and partial
    sums drawn over their full ranges with the corner values forced in; each vector carries the
    PE model's coefficients (the scheme's ``entry_coefficients``; ``model`` = the PackedLayer they are
    computed from, default ``packed``)."""
    scheme = get_scheme(packed.scheme)
    program = scheme(array=packed.array).schedule(layer)[0]
    assert program.array.lanes == lanes
    entries = sorted({e for sec in program.sections for slot in sec for e in slot.entries})
    extremes = [-128, 127, 0, -1]
    vectors = []
    for i in range(count):
        entry = int(entries[i % len(entries)] if i % 3 else rng.choice(entries))
        xs = [int(v) for v in rng.integers(-128, 128, size=lanes)]
        if i < 16:
            xs = [extremes[(i + lane) % 4] for lane in range(lanes)]
        psum = int(rng.integers(-PSUM_MAX, PSUM_MAX + 1))
        if i % 7 == 0:
            psum = [PSUM_MAX, -PSUM_MAX, 0][i % 3]
        vectors.append([entry, xs, psum, list(scheme.entry_coefficients(model or packed, entry))])
    return vectors


def dense_case(rng):
    layer = random_quant_layer(rng, "linear", 64, 1, 1, 8)
    layer.weight[0, :4] = [-128, 127, 0, -1]
    return layer, pack_layer(layer, "dense", array=ArrayConfig(2, 2))


@pytest.fixture(scope="module")
def dense_pe():
    rng = np.random.default_rng(11)
    layer, packed = dense_case(rng)
    return layer, packed, ProcessingElement(make_product(packed))


def test_pe_dense_random_and_extremes(simulator, dense_pe, tmp_path):
    layer, packed, pe = dense_pe
    vectors = pe_vectors(np.random.default_rng(5), packed, layer, pe.lanes, 400)
    assert {-128, 127} <= set(layer.weight.flat)
    assert {-128, 127} <= {x for v in vectors for x in v[1]}
    bld = build(pe, simulator, "pe_dense")
    res = run_bench(bld, "sparsyn.sim.benches.bench_pe",
                    {"scheme": packed.scheme, "lanes": pe.lanes, "vectors": vectors},
                    test_dir=tmp_path)
    assert res["checked"] == len(vectors)


def test_pe_bench_reports_a_wrong_model(dense_pe, tmp_path):
    """The scoreboard must catch a model that disagrees with the hardware: claim 4-bit weights."""
    layer, packed, pe = dense_pe
    wrong = PackedLayer(packed.scheme, dict(packed.meta, weight_bits=4), packed.roms)
    vectors = pe_vectors(np.random.default_rng(6), packed, layer, pe.lanes, 40, model=wrong)
    bld = build(pe, "icarus", "pe_dense")
    with pytest.raises(BenchFailure) as info:
        run_bench(bld, "sparsyn.sim.benches.bench_pe",
                  {"scheme": packed.scheme, "lanes": pe.lanes, "vectors": vectors},
                  test_dir=tmp_path)
    msg = str(info.value)
    assert "expected psum_out" in msg and "waveform:" in msg
    assert info.value.waveform is not None and info.value.waveform.exists()
