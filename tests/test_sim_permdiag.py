"""permdiag RTL in Icarus and Verilator (cocotb): the permuted-diagonal engine bit-exact against the golden model
with exact cycles per image. The scoreboard (``sparsyn.sim.benches.bench_engine``) compares every output element
in order after the run, independent of timing; inputs and outputs are throttled (valid / ready pauses).

Random p (powers of two and not), random offsets k_l, PEs and multipliers, layers p does not divide, a 1x1 conv,
inputs at densities 0 % .. 100 %, and the FC layer of the default model compressed with ``permdiag``."""
import numpy as np
import pytest

from sparsyn.sim.check import compressed_default, run_engine
from sparsyn.sw.schemes.permdiag import PermDiagScheme
from sparsyn.sw.testing import fit_requant, random_input, random_permdiag_layer

DENSITIES = (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)

CASES = {   # n, k, p, pes, mults, kind, (h, w)
    "fc_p4_ragged": (22, 30, 4, 3, 1, "linear", (1, 1)),
    "fc_p3_mults2": (17, 25, 3, 2, 2, "linear", (1, 1)),
    "fc_p8": (32, 48, 8, 0, 1, "linear", (1, 1)),
    "conv1x1_p5_ragged": (12, 11, 5, 1, 2, "conv", (2, 3)),
}


def _images(rng, layer):
    out = []
    for d in DENSITIES:
        x = random_input(rng, layer)[0].numpy()
        x[rng.random(x.shape) >= d] = 0
        out.append(x)
    return np.stack(out)


@pytest.mark.parametrize("name", list(CASES))
def test_permdiag_engine(simulator, tmp_path, name):
    n, k, p, pes, mults, kind, hw = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    layer, _ = random_permdiag_layer(rng, n, k, p, kind, hw, name=name)
    layer = fit_requant(rng, layer)
    packed = PermDiagScheme(p=p, pes=pes, mults=mults, convs=kind == "conv").pack(layer)
    images = _images(rng, layer)
    res = run_engine(layer, packed, None, simulator, images, test_dir=tmp_path,
                     in_pauses=[1, 1, 0], out_pauses=[1, 0, 1, 1])
    assert res["bit_exact"] and res["cycles_exact"]
    assert res["outputs_checked"] == len(DENSITIES) * n * layer.pixels
    # the measured cycles grow by T per nonzero input and nothing per zero
    z = [int(np.count_nonzero(x)) for x in images]
    cyc = res["cycles_all"]
    assert cyc == res["cycles_model_all"] and cyc[0] < cyc[-1]
    assert all((cyc[i] - cyc[0]) == packed.meta["slots"] * z[i] for i in range(len(z)))


def test_default_model_fc(simulator, tmp_path):
    """The default digits model compressed with permdiag: its FC layer, fed the golden model's activations of
    test images (ReLU / max-pool zeros included), bit-exact with exact per-image cycles."""
    qmodel, packed, x, outs = compressed_default(PermDiagScheme(array="4x4", p=4, epochs=3), images=4)
    fc = qmodel.layers[-1]
    assert packed[fc.name].scheme == "permdiag"
    res = run_engine(fc, packed[fc.name], None, simulator, outs[-2], test_dir=tmp_path)
    assert res["bit_exact"] and res["cycles_exact"] and len(set(res["cycles_all"])) > 1
