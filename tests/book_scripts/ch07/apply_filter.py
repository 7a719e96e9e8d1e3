# coding: utf-8
# Trained filters applied to a picture with common.layers.Convolution and a bias of 0 (the book's figure 7-25).
import sys, os
sys.path.append(os.pardir)
import numpy as np
import matplotlib.pyplot as plt
from simple_convnet import SimpleConvNet
from matplotlib.image import imread
from common.layers import Convolution

network = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={'filter_num': 6, 'filter_size': 5, 'pad': 0, 'stride': 1},
                        hidden_size=20, output_size=10, weight_init_std=0.01)
network.load_params("params.pkl")

img = imread('../dataset/lena_gray.png')
img = img.reshape(1, 1, *img.shape)

fig = plt.figure()
for i in range(4):
    w = network.params['W1'][i]
    b = 0

    w = w.reshape(1, *w.shape)
    conv_layer = Convolution(w, b)
    out = conv_layer.forward(img)
    out = out.reshape(out.shape[2], out.shape[3])
    print("filter", i, "output", out.shape, out.dtype)

    ax = fig.add_subplot(2, 2, i+1, xticks=[], yticks=[])
    ax.imshow(out, cmap=plt.cm.gray_r, interpolation='nearest')

plt.show()
