# coding: utf-8
# The book's DeepConvNet layout from common.layers (six 3x3 convolutions, three poolings, dropout), few filters.
import sys, os
sys.path.append(os.pardir)
import pickle
import numpy as np
from common.layers import *


class DeepConvNet:

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 4, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_2={'filter_num': 4, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_3={'filter_num': 4, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_4={'filter_num': 4, 'filter_size': 3, 'pad': 2, 'stride': 1},
                 conv_param_5={'filter_num': 8, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_6={'filter_num': 8, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 hidden_size=20, output_size=10):
        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6]
        pre_node_nums = np.array([input_dim[0]*3*3] + [p['filter_num']*3*3 for p in conv_params[:5]]
                                 + [conv_param_6['filter_num']*4*4, hidden_size])
        weight_init_scales = np.sqrt(2.0 / pre_node_nums)

        self.params = {}
        pre_channel_num = input_dim[0]
        for idx, conv_param in enumerate(conv_params):
            self.params['W' + str(idx+1)] = weight_init_scales[idx] * np.random.randn(
                conv_param['filter_num'], pre_channel_num, conv_param['filter_size'], conv_param['filter_size'])
            self.params['b' + str(idx+1)] = np.zeros(conv_param['filter_num'])
            pre_channel_num = conv_param['filter_num']
        self.params['W7'] = weight_init_scales[6] * np.random.randn(conv_param_6['filter_num']*4*4, hidden_size)
        self.params['b7'] = np.zeros(hidden_size)
        self.params['W8'] = weight_init_scales[7] * np.random.randn(hidden_size, output_size)
        self.params['b8'] = np.zeros(output_size)

        self.layers = []
        for idx, conv_param in enumerate(conv_params):
            self.layers.append(Convolution(self.params['W' + str(idx+1)], self.params['b' + str(idx+1)],
                                           conv_param['stride'], conv_param['pad']))
            self.layers.append(Relu())
            if idx % 2 == 1:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(Affine(self.params['W7'], self.params['b7']))
        self.layers.append(Relu())
        self.layers.append(Dropout(0.5))
        self.layers.append(Affine(self.params['W8'], self.params['b8']))
        self.layers.append(Dropout(0.5))
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, t)

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            tx = x[i*batch_size:(i+1)*batch_size]
            tt = t[i*batch_size:(i+1)*batch_size]
            y = np.argmax(self.predict(tx, train_flg=False), axis=1)
            acc += np.sum(y == tt)
        return acc / x.shape[0]

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        tmp_layers = self.layers.copy()
        tmp_layers.reverse()
        for layer in tmp_layers:
            dout = layer.backward(dout)
        grads = {}
        for i, layer_idx in enumerate((0, 2, 5, 7, 10, 12, 15, 18)):
            grads['W' + str(i+1)] = self.layers[layer_idx].dW
            grads['b' + str(i+1)] = self.layers[layer_idx].db
        return grads

    def save_params(self, file_name="params.pkl"):
        params = {}
        for key, val in self.params.items():
            params[key] = val
        with open(file_name, 'wb') as f:
            pickle.dump(params, f)

    def load_params(self, file_name="params.pkl"):
        with open(file_name, 'rb') as f:
            params = pickle.load(f)
        for key, val in params.items():
            self.params[key] = val
        for i, layer_idx in enumerate((0, 2, 5, 7, 10, 12, 15, 18)):
            self.layers[layer_idx].W = self.params['W' + str(i+1)]
            self.layers[layer_idx].b = self.params['b' + str(i+1)]
