"""packcnn / tight packed layers on the shared LayerEngine in Icarus and Verilator, bit-exact against
the golden model (random packed matrices of several alpha / sections / densities, and the compressed
layers of the default digits model). Reuses sparsyn.sim.check.run_engine and its cocotb bench."""
import numpy as np
import pytest

from sparsyn.sim.check import model_inputs, run_engine
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.subword import prune_subwords
from sparsyn.sw.testing import random_input, random_quant_layer

#: The alpha-lane arrays are big enough for Verilator to split its C++ into several files; that build
#: needs sim.runner's CFG_CXXFLAGS_PCH_I fix (checked in tests/test_sim_array.py).


def check_row(row, layer, images):
    assert row["bit_exact"] and row["outputs_checked"] == images * layer.n * layer.pixels
    # exact: every image's measured cycles equal the model's
    assert row["cycles_exact"] and row["cycles_all"] == row["cycles_model_all"], row
    assert row["cycles_measured"] == row["cycles_model"], (row["cycles_measured"], row["cycles_model"])


#: (id, scheme, alpha, section height = array cols, subword, density, kind, cin, h, w, cout, kernel, pad)
RANDOM = [
    ("tight_a4_h4_conv", "tight", 4, 4, False, 0.3, "conv", 3, 5, 5, 6, 3, 1),
    ("packcnn_a2_sub_linear", "packcnn", 2, 4, True, 0.4, "linear", 40, 1, 1, 9, 1, 0),
    ("tight_a3_h8_sub_conv", "tight", 3, 8, True, 0.15, "conv", 4, 4, 4, 10, 3, 0),
]


def _random_case(case):
    name, scheme, alpha, h, sub, dens, kind, cin, hh, ww, cout, k, pad = case
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = random_quant_layer(rng, kind, cin, hh, ww, cout, kernel=k, padding=pad, density=dens, name=name)
    if sub:
        layer.weight = prune_subwords(np.clip(layer.weight, -119, 119), 2)
    array = ArrayConfig(4, h)               # the section height is the array's column count
    opts = {"alpha": alpha, "subword": sub}
    if scheme == "tight":
        opts["anneal_steps"] = 80
    packed = get_scheme(scheme)(array=array, **opts).pack(layer)
    assert np.array_equal(get_scheme(scheme).decode(packed), layer.weight)
    assert packed.array == ArrayConfig(4, h, alpha)
    return layer, packed, array, random_input(rng, layer, batch=2)


@pytest.mark.parametrize("case", [RANDOM[0]], ids=[RANDOM[0][0]])
def test_random_packed_layer_both_simulators(simulator, case, tmp_path):
    layer, packed, array, x = _random_case(case)
    check_row(run_engine(layer, packed, array, simulator, x, test_dir=tmp_path), layer, 2)


@pytest.mark.parametrize("case", RANDOM[1:], ids=[c[0] for c in RANDOM[1:]])
def test_random_packed_layer_icarus(case, tmp_path):
    layer, packed, array, x = _random_case(case)
    check_row(run_engine(layer, packed, array, "icarus", x, test_dir=tmp_path), layer, 2)


@pytest.fixture(scope="session")
def default_compressed():
    """The default digits model compressed with packcnn and with tight (short schedules), two images."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    out = {}
    for scheme in ("packcnn", "tight"):
        opts = {"prune_steps": 1, "finetune_epochs": 1, "density": 0.3}
        if scheme == "tight":
            opts["anneal_steps"] = 100
        qmodel, packed, _ = compress_model(default_model(progress=False),
                                           get_scheme(scheme)(array=ArrayConfig(4, 4), **opts), digits(),
                                           progress=False, log=lambda *a, **k: None)
        x, outs = model_inputs(qmodel, images=2)
        out[scheme] = (qmodel, packed, x, outs)
    return out


#: Every compressed layer of the default model on both simulators (one Verilator build each; the
#: packcnn conv2 Verilator build is the fourth and runs with -m slow to keep the default set short).
CASES = [pytest.param(scheme, layer, sim, id=f"{scheme}-{layer}-{sim}",
                      marks=[pytest.mark.slow] if (scheme, layer, sim) == ("packcnn", "conv2", "verilator") else [])
         for scheme in ("packcnn", "tight") for layer in ("conv2", "fc") for sim in ("icarus", "verilator")]


@pytest.mark.parametrize("scheme,layer_name,sim", CASES)
def test_default_model_packed_layer(default_compressed, scheme, layer_name, sim, tmp_path):
    from sparsyn.sim.tools import have_simulator
    reason = have_simulator(sim)
    if reason:
        pytest.skip(reason)
    qmodel, packed, x, outs = default_compressed[scheme]
    i = [l.name for l in qmodel.layers].index(layer_name)
    layer = qmodel.layers[i]
    assert packed[layer_name].scheme == scheme
    row = run_engine(layer, packed[layer_name], ArrayConfig(4, 4), sim, outs[i - 1], test_dir=tmp_path)
    check_row(row, layer, 2)
