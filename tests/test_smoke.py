import numpy as np

import minigrad as mg


def test_softmax_batch_vjp_matches_rowwise_jacobian() -> None:
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.normal(size=(5, 4)), requires_grad=True)
    g = rng.normal(size=(5, 4))
    x.softmax(-1).backward(g)
    s = np.exp(x.data) / np.exp(x.data).sum(-1, keepdims=True)
    expected = np.stack([(np.diag(r) - np.outer(r, r)).T @ gr for r, gr in zip(s, g)])
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12, atol=1e-12)
