"""Class labels as the book gives them: indices (N,), a column of indices (N, 1), or rows (N, K).

The book's scripts pass labels in all three forms: ``load_mnist`` gives
indices or one-hot rows, and chapter 7's ``gradient_check.py`` gives one
label as ``np.array([1]).reshape((1, 1))``. :func:`class_indices` is the one
check that SoftmaxWithLoss, the networks' ``accuracy`` and the Trainer share,
so each accepts the same labels and refuses the same mistakes, naming the
numbers.
"""

from __future__ import annotations

from .backend import is_cupy_array

__all__ = ["class_indices"]


def class_indices(t, n, classes, owner, check_range=True):
    """``t`` as (N,) integer class indices, or None when ``t`` holds rows (N, K) of class probabilities.

    ``n`` is the number of examples and ``classes`` the number of classes K.
    An (N, K) array is rows (one-hot or soft), except that an integer (N, 1)
    array is indices even for K = 1; an (N,) or (N, 1) array must hold
    integers, and (N, 1) comes back as an (N,) view. With
    ``check_range``, NumPy indices outside 0..K-1 are a ValueError (CuPy
    indices are not read back: that would wait for the GPU). ``owner``
    starts every message.
    """
    shape = tuple(t.shape)
    if shape == (n, classes) and (classes > 1 or t.dtype.kind == "f"):
        return None
    if shape not in ((n,), (n, 1)):
        count = f"; {shape[0]} labels for {n} examples" if len(shape) in (1, 2) and shape[0] != n else ""
        raise ValueError(f"{owner}: labels must be indices ({n},) or one-hot ({n}, {classes}), got shape {shape}"
                         f"{count}; a column of indices ({n}, 1) works too")
    if t.dtype.kind not in "iu":
        raise ValueError(f"{owner}: index labels must be integers, got dtype {t.dtype}")
    t = t.reshape(n)
    if check_range and n and not is_cupy_array(t):
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= classes:
            raise ValueError(f"{owner}: labels must lie in 0..{classes - 1}, got {low}..{high}")
    return t
