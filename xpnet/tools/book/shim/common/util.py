"""The book's common/util.py: xpnet's im2col, col2im, conv_output_size (an integer), smooth_curve, shuffle_dataset."""

import numpy as np

from xpnet.util import col2im, conv_output_size, im2col, shuffle_dataset, smooth_curve

__all__ = ["np", "smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"]
