# coding: utf-8
# Dropout against overfitting a small training set, trained by common.trainer (the book's figure 6-23).
import os
import sys
sys.path.append(os.pardir)
import numpy as np
import matplotlib.pyplot as plt
from dataset.mnist import load_mnist
from common.multi_layer_net_extend import MultiLayerNetExtend
from common.trainer import Trainer

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
x_train = x_train[:100]
t_train = t_train[:100]

use_dropout = True
dropout_ratio = 0.2

network = MultiLayerNetExtend(input_size=784, hidden_size_list=[30, 30, 30], output_size=10,
                              use_dropout=use_dropout, dropout_ration=dropout_ratio)
trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=5, mini_batch_size=50,
                  optimizer='sgd', optimizer_param={'lr': 0.05}, verbose=True)
trainer.train()

train_acc_list, test_acc_list = trainer.train_acc_list, trainer.test_acc_list
print("epochs recorded:", len(train_acc_list), len(test_acc_list))

x = np.arange(len(train_acc_list))
plt.plot(x, train_acc_list, marker='o', label='train', markevery=2)
plt.plot(x, test_acc_list, marker='s', label='test', markevery=2)
plt.ylim(0, 1.0)
plt.legend(loc='lower right')
plt.show()
