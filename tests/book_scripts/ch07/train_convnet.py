# coding: utf-8
# SimpleConvNet trained by common.trainer with Adam, its parameters saved with pickle (the book's chapter 7).
import sys, os
sys.path.append(os.pardir)
import numpy as np
import matplotlib.pyplot as plt
from dataset.mnist import load_mnist
from simple_convnet import SimpleConvNet
from common.trainer import Trainer

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
x_train, t_train = x_train[:800], t_train[:800]

max_epochs = 4

network = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={'filter_num': 6, 'filter_size': 5, 'pad': 0, 'stride': 1},
                        hidden_size=20, output_size=10, weight_init_std=0.01)

trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=max_epochs, mini_batch_size=100,
                  optimizer='Adam', optimizer_param={'lr': 0.01},
                  evaluate_sample_num_per_epoch=100)
trainer.train()

network.save_params("params.pkl")
print("Saved Network Parameters!")

x = np.arange(max_epochs)
plt.plot(x, trainer.train_acc_list, marker='o', label='train', markevery=2)
plt.plot(x, trainer.test_acc_list, marker='s', label='test', markevery=2)
plt.ylim(0, 1.0)
plt.legend(loc='lower right')
plt.show()
