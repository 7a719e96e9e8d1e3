"""Train the book's SimpleConvNet on the embedded digits, on the device XPNET_DEVICE names.

    python examples/train_convnet.py                     # CPU
    XPNET_DEVICE=gpu python examples/train_convnet.py    # CUDA GPU, nothing else changed

Prints the device, the time per epoch and the final test accuracy.
"""

import xpnet
from xpnet.datasets import load_digits
from xpnet.nets import SimpleConvNet
from xpnet.trainer import Trainer

xpnet.seed(0)
(x_train, t_train), (x_test, t_test) = load_digits(flatten=False)

network = SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1},
                        hidden_size=100, output_size=10, weight_init_std="he")
trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                  optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False)
trainer.train()

print(f"device: {xpnet.get_device()}")
for epoch, (seconds, acc) in enumerate(zip(trainer.epoch_times, trainer.test_acc_list), start=1):
    print(f"epoch {epoch:2d}: {seconds * 1000:7.1f} ms, test accuracy {acc:.4f}")
print(f"mean time per epoch: {sum(trainer.epoch_times) / len(trainer.epoch_times) * 1000:.1f} ms")
print(f"final test accuracy: {trainer.test_acc_list[-1]:.4f}")
