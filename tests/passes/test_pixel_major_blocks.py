"""Pixel-major blocks of conv-shaped nodes (passes/partition.py: tile_shape, make_blocks)."""
import nir
import numpy as np
import pytest

from nmc.ir import Graph
from nmc.passes.netmodel import build_network
from nmc.passes.partition import make_blocks, run_partition, tile_shape
from nmc.passes.rules import max_per_core
from nmc.target_model import CoreLimits
from placement_helpers import brute_traffic


def conv_net(side=24, c_in=2, c=8, seed=0):
    """input (c_in, side, side) → conv 3×3 → IF (c channels) → conv 3×3 → IF (c channels)."""
    rng = np.random.default_rng(seed)

    def conv(cin):
        n = nir.Conv2d(input_shape=(side, side), weight=rng.normal(size=(c, cin, 3, 3)), stride=1, padding=1,
                       dilation=1, groups=1, bias=np.zeros(c))
        n.input_type = {"input": np.array([cin, side, side])}
        n.output_type = {"output": np.array([c, side, side])}
        return n

    def if_():
        shp = (c, side, side)
        return nir.IF(r=np.ones(shp), v_threshold=np.ones(shp), v_reset=np.zeros(shp))

    nodes = {"in": nir.Input(input_type={"input": np.array([c_in, side, side])}), "c1": conv(c_in), "l1": if_(),
             "c2": conv(c), "l2": if_(), "out": nir.Output(output_type={"output": np.array([c, side, side])})}
    return Graph(nodes, [("in", "c1"), ("c1", "l1"), ("l1", "c2"), ("c2", "l2"), ("l2", "out")], meta={"dt": 1e-3})


def test_tile_shape_fills_blocks_with_near_square_tiles():
    assert tile_shape(8, (250, 250), 256) == (8, (4, 8))      # 32 pixels: 4×8 fills the block (5×6 leaves 2)
    assert tile_shape(8, (250, 250), 248) == (8, (5, 6))      # 31 pixels: 5×6, not a 1×31 strip
    assert tile_shape(8, (250, 250), 128) == (8, (4, 4))
    assert tile_shape(1, (250, 250), 128) == (1, (8, 16))
    assert tile_shape(8, (250, 250), 1) is None                # one neuron per block: consecutive blocks
    assert tile_shape(8, (250,), 256) == (8, (32,))
    assert tile_shape(16, (5, 5), 8) == (8, (1, 1))            # more channels than a block holds: channel groups
    assert tile_shape(8, (2, 100), 256) == (8, (2, 16))        # as tall as the image: any width
    assert tile_shape(4, (7, 7, 7), 64) is None                # 3 spatial dims: consecutive blocks
    for c, hw, per in [(8, (250, 250), 256), (2, (30, 40), 100), (1, (9, 9), 12), (3, (64, 64), 96)]:
        cg, (th, tw) = tile_shape(c, hw, per)
        assert th * tw * cg <= per and max(th, tw) <= 2 * min(th, tw)


@pytest.mark.parametrize("max_blocks", [64, 200])
def test_blocks_are_all_channels_of_a_pixel_tile(max_blocks):
    g = conv_net(side=20)
    lim = CoreLimits(neurons_max=64, weight_bits=8)
    net = build_network(g, lim)
    caps = max_per_core(net, lim)
    shapes = [tuple(g.shape_out(k)) for k in net.pop_names]
    b = make_blocks(net, caps, max_blocks, shapes)
    assert b.tiled and set(b.tiles) == {0, 1}
    placed = np.nonzero(net.placed_mask)[0]
    assert np.array_equal(np.sort(b.order), placed)                           # every neuron in one block
    assert np.all(b.of_unit[placed] >= 0) and np.all(b.of_unit[~net.placed_mask] == -1)
    for i in range(b.n):
        units = b.order[b.start[i]:b.stop[i]]
        assert np.all(b.of_unit[units] == i)
        k = int(b.pop[i])
        c, (th, tw) = b.tiles[k]
        ch, y, x = np.unravel_index(units - net.pop_slice(k).start, shapes[k])
        # a block = every channel × every pixel of a rectangle inside one th × tw tile
        assert len({(a, bb) for a, bb in zip(y // th, x // tw)}) == 1
        assert len(units) == c * len(set(zip(y, x))) == (y.max() - y.min() + 1) * (x.max() - x.min() + 1) * c
        assert units.size <= caps[k]
    np.testing.assert_array_equal(b.neurons, np.bincount(b.of_unit[placed], minlength=b.n))
    np.testing.assert_allclose(b.bytes_, np.bincount(b.of_unit[placed], weights=net.bytes_[placed], minlength=b.n))
    np.testing.assert_allclose(b.work, np.bincount(b.of_unit[placed], weights=net.work[placed], minlength=b.n))


def test_one_neuron_blocks_and_no_shapes_stay_consecutive():
    g = conv_net(side=8)
    lim = CoreLimits(neurons_max=64, weight_bits=8)
    net = build_network(g, lim)
    caps = max_per_core(net, lim)
    shapes = [tuple(g.shape_out(k)) for k in net.pop_names]
    one = make_blocks(net, caps, 4096, shapes)                 # 1024 neurons ≤ 4096 blocks: a neuron each
    plain = make_blocks(net, caps, 64)
    assert not one.tiled and one.order is None and not plain.tiled
    placed = np.nonzero(net.placed_mask)[0]
    np.testing.assert_array_equal(one.of_unit[placed], np.arange(placed.size))
    for i in range(plain.n):                                   # consecutive: block i = a range of units
        u = np.nonzero(plain.of_unit == i)[0]
        assert u[-1] - u[0] + 1 == u.size


def test_conv_partition_on_tiles_beats_sequential_fill():
    """Blocks of several neurons: the partitioners work on pixel tiles, sequential fill keeps
    consecutive neurons (its traffic is the same as partition{method=sequential}'s), and the
    reported traffic is the exact multicast count of the chosen assignment."""
    g = conv_net(side=32)
    lim = CoreLimits(neurons_max=128, weight_bits=8)
    pt, rep = run_partition(g, lim, method="kahypar", max_blocks=128)
    _, seq = run_partition(g, lim, method="sequential", max_blocks=128)
    assert rep["blocks_pixel_major"] == {"l1": {"channels": 8, "pixels": [4, 4]},
                                         "l2": {"channels": 8, "pixels": [4, 4]}}
    assert rep["traffic_sequential"] == seq["traffic"]
    assert rep["traffic"] <= 0.5 * rep["traffic_sequential"]
    uc = np.full(pt.net.n_units, -1)
    m = pt.blocks.of_unit >= 0
    uc[m] = pt.part[pt.blocks.of_unit[m]]
    assert rep["traffic"] == pytest.approx(brute_traffic(pt.net, uc), rel=1e-9)
    assert np.bincount(uc[m]).max() <= 128
