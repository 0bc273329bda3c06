"""The model and data: softmax regression on sparse bag-of-features data, in numpy.

Each client sees mostly its own features (as users of a keyboard or a recommender see
their own words or items), so the rows of features it never sees do not change in its
update: what a real federated update looks like, and what a codec can exploit.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 4096
N_CLASSES = 16
ACTIVE = 24  # features per sample


def init_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense/kernel": (0.01 * rng.standard_normal((N_FEATURES, N_CLASSES))).astype(np.float32),
        "dense/bias": np.zeros(N_CLASSES, np.float32),
    }


def load_data(
    partition_id: int, num_partitions: int, n: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """The partition's samples: binary features drawn mostly from its own vocabulary."""
    truth = np.random.default_rng(1234).standard_normal((N_FEATURES, N_CLASSES))
    rng = np.random.default_rng(100 + partition_id)
    own = np.array_split(np.arange(N_FEATURES), num_partitions)[partition_id]
    shared = np.arange(64)  # a few features everybody has
    vocab = np.unique(np.concatenate([own[: len(own) // 2], shared]))
    x = np.zeros((n, N_FEATURES), np.float32)
    for i in range(n):
        x[i, rng.choice(vocab, ACTIVE, replace=False)] = 1.0
    y = np.argmax(x @ truth, axis=1)
    return x, y


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_accuracy(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    p = _softmax(x @ model["dense/kernel"] + model["dense/bias"])
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


def train(
    model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float
) -> tuple[dict[str, np.ndarray], float]:
    """Full-batch gradient descent; returns the new model and the final training loss."""
    w = model["dense/kernel"].copy()
    b = model["dense/bias"].copy()
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y]
    for _ in range(epochs):
        p = _softmax(x @ w + b)
        g = (p - onehot) / len(y)
        w -= lr * (x.T @ g).astype(np.float32)
        b -= lr * g.sum(axis=0).astype(np.float32)
    new = {"dense/kernel": w, "dense/bias": b}
    return new, loss_and_accuracy(new, x, y)[0]
