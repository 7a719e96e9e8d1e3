# coding: utf-8
# DeepConvNet trained by common.trainer with Adam, its parameters pickled (the book's chapter 8).
import sys, os
sys.path.append(os.pardir)
import numpy as np
import matplotlib.pyplot as plt
from dataset.mnist import load_mnist
from deep_convnet import DeepConvNet
from common.trainer import Trainer

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
x_train, t_train = x_train[:300], t_train[:300]

network = DeepConvNet()
trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=2, mini_batch_size=50,
                  optimizer='Adam', optimizer_param={'lr': 0.003},
                  evaluate_sample_num_per_epoch=100)
trainer.train()

network.save_params("deep_convnet_params.pkl")
print("Saved Network Parameters!")
