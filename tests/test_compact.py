"""to_compact / from_compact: exact round trips, formats and bytes checked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import sparse_optax as so

# shape -> the index dtype by hand: the narrowest signed int holding the largest dimension size.
SHAPES = {
    (5,): np.int8,
    (127, 2): np.int8,
    (3, 3, 4, 8): np.int8,
    (128,): np.int16,  # 128 itself must fit (BCOO's padding index), so not int8
    (300, 100): np.int16,
    (2, 130, 3, 2): np.int16,
    (40000,): np.int32,
}
DTYPES = [np.float32, jnp.bfloat16, np.float16]
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(x):
  x = np.asarray(x)
  return x.view(UINT[x.dtype.itemsize])


def _sparse_leaf(rng, shape, dtype, density):
  values = rng.normal(size=shape) + 3.0  # away from 0: no value rounds to zero in float16
  keep = rng.random(shape) < density
  return jnp.asarray(np.where(keep, values, 0.0).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 0.7, 1.0])
def test_round_trip_is_bit_exact_and_format_as_by_hand(dtype, density):
  rng = np.random.default_rng(int(density * 100))
  params = {f"leaf{i}": _sparse_leaf(rng, s, dtype, density) for i, s in enumerate(SHAPES)}
  compact = so.to_compact(params)
  back = so.from_compact(compact)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for (name, x), shape in zip(params.items(), SHAPES):
    c, y = compact[name], back[name]
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(_bits(y), _bits(x))
    nnz = int(np.count_nonzero(np.asarray(x)))
    itemsize = np.dtype(dtype).itemsize
    # bytes by hand: one value and one index per axis for each non-zero
    bcoo_bytes = nnz * (itemsize + len(shape) * np.dtype(SHAPES[shape]).itemsize)
    if bcoo_bytes < x.size * itemsize:
      assert isinstance(c, sparse.BCOO), name
      assert c.indices.dtype == SHAPES[shape] and c.nse == nnz
      assert c.n_batch == 0 and c.n_dense == 0
    else:
      assert c is x, name
  if density == 0.0:
    assert all(isinstance(c, sparse.BCOO) for c in compact.values())
  if density == 1.0:
    assert all(c is x for c, x in zip(compact.values(), params.values()))


@pytest.mark.parametrize(
    "shape, dtype, nnz, fmt",
    [
        # float32, int8 indices: 4 + 2*1 = 6 bytes a non-zero against 400 bytes dense
        ((10, 10), np.float32, 66, "bcoo"),  # 396 < 400
        ((10, 10), np.float32, 67, "dense"),  # 402
        # bfloat16, 2-D int8: 2 + 2 = 4 bytes a non-zero against 32 bytes: a tie stays dense
        ((4, 4), jnp.bfloat16, 7, "bcoo"),  # 28
        ((4, 4), jnp.bfloat16, 8, "dense"),  # 32
        # float16 1-D of 200, int16 indices: 2 + 2 = 4 bytes against 400
        ((200,), np.float16, 99, "bcoo"),  # 396
        ((200,), np.float16, 100, "dense"),  # 400
    ],
)
def test_format_switches_at_the_hand_computed_byte_count(shape, dtype, nnz, fmt):
  flat = np.zeros(int(np.prod(shape)))
  flat[:nnz] = 1.5
  x = jnp.asarray(flat.reshape(shape).astype(dtype))
  c = so.to_compact(x)
  assert ("bcoo" if isinstance(c, sparse.BCOO) else "dense") == fmt
  assert so.compact_summary(x)["layers"][""]["format"] == fmt


@pytest.mark.parametrize("shape", list(SHAPES) + [(32767,), (32768,), (2, 32767)])
def test_index_dtype_is_the_narrowest_signed_int_that_holds_every_size(shape):
  want = SHAPES.get(shape, {(32767,): np.int16, (32768,): np.int32, (2, 32767): np.int16}.get(shape))
  x = jnp.zeros(shape).at[tuple(s - 1 for s in shape)].set(1.0)  # the largest index
  c = so.to_compact(x)
  assert c.indices.dtype == want
  np.testing.assert_array_equal(c.indices, [[s - 1 for s in shape]])
  # the narrow indices still work in BCOO's own ops
  np.testing.assert_array_equal(c.todense(), x)
  np.testing.assert_array_equal(c.T.todense(), x.T)


def test_negative_zero_counts_as_zero_and_comes_back_positive():
  x = jnp.zeros(50).at[3].set(-0.0).at[7].set(2.0)
  c = so.to_compact({"w": x})["w"]
  assert c.nse == 1  # only the 2.0 is stored
  y = so.from_compact({"w": c})["w"]
  assert not np.signbit(np.asarray(y)[3]) and np.signbit(np.asarray(x)[3])
  np.testing.assert_array_equal(y, x)  # equal as numbers
  # a leaf kept dense is returned as it is, negative zeros and all
  d = jnp.ones((4, 4)).at[0, 0].set(-0.0)  # 15 * (4 + 2) bytes > 64
  assert so.to_compact(d) is d
  # pruning by multiplying with a float mask writes -0.0 for every negative weight
  # pruned: half the zeros, which kept as entries would double what is stored
  w = jnp.asarray(np.random.default_rng(0).normal(size=1000), jnp.float32)
  pruned = np.asarray(w * (jnp.abs(w) > 2.0).astype(jnp.float32))
  negative_zeros = int(np.sum(np.signbit(pruned) & (pruned == 0)))
  assert negative_zeros > 400
  c = so.to_compact(pruned)
  assert c.nse == np.sum(np.abs(np.asarray(w)) > 2.0) == int(so.count_nonzeros(pruned))
  np.testing.assert_array_equal(so.from_compact(c), pruned)


def test_nan_inf_and_subnormal_bits_survive_eagerly_and_under_jit():
  bits = np.array(
      [0x7FC00001, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x00000001, 0x80000001],
      np.uint32,
  )  # quiet NaN with payload, signalling NaN, negative NaN, ±inf, ±smallest subnormal
  x = np.zeros(64, np.uint32)
  x[:63:9] = bits
  x = jnp.asarray(x.view(np.float32))
  c = so.to_compact({"w": x})
  assert isinstance(c["w"], sparse.BCOO) and c["w"].nse == 7
  np.testing.assert_array_equal(_bits(so.from_compact(c)["w"]), _bits(x))
  np.testing.assert_array_equal(_bits(jax.jit(so.from_compact)(c)["w"]), _bits(x))


def test_from_compact_under_jit_matches_eager_and_does_not_retrace():
  rng = np.random.default_rng(0)
  params = {"a": {"kernel": _sparse_leaf(rng, (30, 20), np.float32, 0.1)},
            "b": _sparse_leaf(rng, (3, 3, 2, 4), jnp.bfloat16, 0.9)}
  c = so.to_compact(params)
  traces = []
  f = jax.jit(lambda c: traces.append(1) or so.from_compact(c))
  for _ in range(2):
    out = f(c)
  assert len(traces) == 1
  for k in ("a", "b"):
    want = params[k]["kernel"] if k == "a" else params[k]
    got = out[k]["kernel"] if k == "a" else out[k]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_non_floating_scalar_and_float64_leaves_pass_through():
  step = jnp.zeros((), jnp.int32)
  mask = np.zeros((100,), bool)
  ints = np.zeros((50, 50), np.int32)  # all zero but not floating
  scalar = jnp.float32(0.0)
  f64 = np.zeros((50, 50), np.float64)  # jax without x64 would make it float32
  params = {"step": step, "mask": mask, "ints": ints, "scalar": scalar, "f64": f64, "none": None}
  c = so.to_compact(params)
  assert c["none"] is None
  for k in ("step", "mask", "ints", "scalar", "f64"):
    assert c[k] is params[k], k
  back = so.from_compact(c)
  assert back["f64"].dtype == np.float64 and back["none"] is None


def test_summary_numbers_by_hand():
  k = np.zeros((300, 100), np.float32)
  k.flat[::50] = 1.0  # 600 non-zeros: 2% density
  conv = np.full((3, 3, 4, 8), 0.5, np.float32).astype(jnp.bfloat16)
  params = {
      "dense": {"kernel": jnp.asarray(k), "bias": jnp.zeros(100)},
      "conv": {"kernel": jnp.asarray(conv)},
      "step": np.int32(7),
  }
  s = so.compact_summary(params)
  assert s["layers"] == {
      # 600 * 4 bytes of values + 600 * 2 axes * 2 bytes (int16) of indices
      "dense/kernel": {"format": "bcoo", "dense_bytes": 120000, "compact_bytes": 4800,
                       "nonzeros": 600, "index_dtype": "int16"},
      # all zero: nothing stored
      "dense/bias": {"format": "bcoo", "dense_bytes": 400, "compact_bytes": 0,
                     "nonzeros": 0, "index_dtype": "int8"},
      # 288 bfloat16 all non-zero: 576 bytes dense, 288 * (2 + 4) as BCOO
      "conv/kernel": {"format": "dense", "dense_bytes": 576, "compact_bytes": 576,
                      "nonzeros": 288, "index_dtype": None},
      "step": {"format": "dense", "dense_bytes": 4, "compact_bytes": 4,
               "nonzeros": 1, "index_dtype": None},
  }
  assert s["dense_bytes"] == 120000 + 400 + 576 + 4
  assert s["compact_bytes"] == 4800 + 0 + 576 + 4
  assert s["ratio"] == pytest.approx(120980 / 5380)
  # the summary measures what to_compact builds
  c = so.to_compact(params)["dense"]["kernel"]
  assert c.data.nbytes + c.indices.nbytes == 4800


def test_summary_ratio_edge_cases():
  s = so.compact_summary({"w": jnp.zeros((10, 10))})
  assert s["compact_bytes"] == 0 and s["ratio"] == float("inf")
  s = so.compact_summary({})
  assert s["dense_bytes"] == s["compact_bytes"] == 0 and s["ratio"] == 1.0 and s["layers"] == {}


def test_compact_matmul_equals_the_dense_product():
  rng = np.random.default_rng(1)
  # small integers: every sum is exact in float32, whatever the order
  k = (rng.integers(-3, 4, (300, 100)) * (rng.random((300, 100)) < 0.02)).astype(np.float32)
  x = rng.integers(-3, 4, (2, 5, 300)).astype(np.float32)
  kc = so.to_compact(jnp.asarray(k))
  assert isinstance(kc, sparse.BCOO)
  want = x @ k
  np.testing.assert_array_equal(so.compact_matmul(jnp.asarray(x), kc), want)
  np.testing.assert_array_equal(jax.jit(so.compact_matmul)(jnp.asarray(x[0]), kc), want[0])
  np.testing.assert_array_equal(so.compact_matmul(jnp.asarray(x), jnp.asarray(k)), want)
  # the transposed form: kernel^T @ x^T
  np.testing.assert_array_equal(kc.T @ jnp.asarray(x[0].T), want[0].T)
  g = jax.grad(lambda x: so.compact_matmul(x, kc).sum())(jnp.asarray(x[0]))
  np.testing.assert_array_equal(g, np.broadcast_to(k.sum(1), (5, 300)))


def test_from_compact_of_a_foreign_bcoo_sums_duplicates():
  # not built by to_compact (no unique_indices): densified with BCOO's own semantics
  m = sparse.BCOO((jnp.array([1.0, 2.0]), jnp.array([[1], [1]], jnp.int32)), shape=(3,))
  np.testing.assert_array_equal(so.from_compact({"m": m})["m"], [0.0, 3.0, 0.0])


def test_bad_inputs_name_the_leaf():
  with pytest.raises(TypeError, match="'a/b'.*float"):
    so.to_compact({"a": {"b": 1.0}})
  with pytest.raises(TypeError, match="'layers/1'.*str"):
    so.to_compact({"layers": [jnp.ones(3), "w"]})
  with pytest.raises(TypeError, match="root.*object"):
    so.to_compact(object())
  with pytest.raises(TypeError, match="'w'.*already sparse"):
    so.to_compact(so.to_compact({"w": jnp.zeros((10, 10))}))
  with pytest.raises(TypeError, match="'w'.*traced"):
    jax.jit(lambda p: so.to_compact(p))({"w": jnp.zeros(3)})
  with pytest.raises(TypeError, match="'x'.*str"):
    so.from_compact({"x": "kernel"})
  with pytest.raises(TypeError, match="compact_summary: leaf 'a/b/1'.*int"):
    so.compact_summary({"a": {"b": [jnp.ones(2), 2]}})
