"""Run under ``mpiexec -n N``: every scenario of scenarios.py, and the layer-level checks, by N ranks.

    mpiexec -n N python tests/mpi/train.py OUT_DIR [DEVICE]     (DEVICE: cpu, the default, or gpu)

Rank 0 writes OUT_DIR/result.npz (arrays) and OUT_DIR/result.json (digests, losses, accuracies);
tests/test_distributed.py compares them with one process.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios  # noqa: E402

import xpnet  # noqa: E402
from xpnet import distributed  # noqa: E402
from xpnet.backend import to_device, to_numpy  # noqa: E402
from xpnet.layers import BatchNormalization, Dropout  # noqa: E402

BN_EXAMPLES, BN_SHAPE = 11, (3, 4, 5)  # the layer check: 11 images of 3 channels, 4x5


def batch_norm_layer_check(comm):
    """A 4-D BatchNormalization layer, synchronized, on this rank's slice of 11 images; the gradient
    arriving is this rank's mean-loss gradient. Returns the output and the gradients, each scaled to the
    global mean loss (dx, dgamma and dbeta times this rank's share of the examples)."""
    rng = np.random.default_rng(5)
    x = (3.0 + rng.standard_normal((BN_EXAMPLES, *BN_SHAPE))).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32) / BN_EXAMPLES  # d(mean loss)/dy of one process
    part = distributed.shard_slice(BN_EXAMPLES, comm.rank, comm.size)
    share = (part.stop - part.start) / BN_EXAMPLES
    channels = BN_SHAPE[0]
    layer = BatchNormalization(to_device(np.linspace(0.5, 1.5, channels, dtype=np.float32)),
                               to_device(np.linspace(-0.2, 0.2, channels, dtype=np.float32)))
    layer.sync = distributed.SyncBatchStatistics(comm)
    out = layer.forward(to_device(x[part]), train_flg=True)
    dx = layer.backward(to_device(dout[part] / share))
    return {"out": out, "dx": dx * share, "dgamma": layer.dgamma * share, "dbeta": layer.dbeta * share,
            "running_mean": layer.running_mean, "running_var": layer.running_var}


def params_digest(net):
    """A digest of the trained parameters alone (no batch-norm statistics)."""
    digest = hashlib.sha256()
    for key in sorted(net.params):
        digest.update(key.encode() + to_numpy(net.params[key]).tobytes())
    return digest.hexdigest()


def state_summary(state):
    """An optimizer's state_dict as scalars, array names and one digest of the arrays' bytes."""
    digest = hashlib.sha256()
    for key in sorted(k for k in state if "/" in k):
        digest.update(key.encode() + np.ascontiguousarray(state[key]).tobytes())
    return {"scalars": {k: v for k, v in state.items() if "/" not in k},
            "arrays": sorted(k for k in state if "/" in k), "digest": digest.hexdigest()}


def main(out_dir, device="cpu"):
    comm = distributed.init(device=device)
    arrays, report = {}, {"ranks": comm.size, "scenarios": {}}

    nets = {}
    for name in scenarios.SCENARIOS:
        net, losses, drawn = scenarios.train_distributed(comm, name)
        nets[name] = net
        report["scenarios"][name] = {
            "losses": losses,
            "drawn": comm.allgather_object(drawn),
            "trained": comm.allgather_object(distributed.parameters_digest(net)),
            "parameters": comm.allgather_object(params_digest(net)),
        }
        arrays.update({f"{name}/{key}": to_numpy(value) for key, value in net.state().items()})

    net = nets["sgd-unsynchronized-batch-norm"]
    distributed.average_batch_norm_statistics(comm, net)
    report["scenarios"]["sgd-unsynchronized-batch-norm"]["averaged"] = comm.allgather_object(
        distributed.parameters_digest(net))

    x, t = scenarios.data("sgd", comm.size)
    net = nets["sgd"]
    report["accuracy"] = {"sharded": distributed.accuracy(comm, net, x, t, batch_size=7),
                          "one process": net.accuracy(x, t, batch_size=7)}

    seed = distributed.seed_ranks(comm, 7)
    mask = Dropout(0.5).forward(to_device(np.ones(64, dtype=np.float32)), train_flg=True)
    arrays["dropout/masks"] = to_numpy(comm.allgather(mask))
    report["dropout seed"] = seed
    report["device"] = xpnet.get_device()
    report["nccl"] = comm.uses_nccl

    xpnet.seed(3)
    net = scenarios.network("adam")
    distributed.broadcast_parameters(comm, net)
    opt = scenarios.optimizer("adam")
    if comm.rank == 0:  # only rank 0 has trained: moments and iter to hand on
        for _ in range(3):
            opt.update(net.params, net.gradient(x[:8], t[:8]))
    distributed.broadcast_optimizer_state(comm, opt)
    report["optimizer"] = comm.allgather_object(state_summary(opt.state_dict()))

    for key, value in batch_norm_layer_check(comm).items():
        gathered = comm.mpi_comm.gather(to_numpy(value), root=0)
        if comm.rank == 0:
            arrays[f"batch_norm/{key}"] = (np.concatenate(gathered) if key in ("out", "dx")
                                           else np.sum(gathered, axis=0) if key in ("dgamma", "dbeta")
                                           else np.stack(gathered))

    if comm.rank == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "result.npz", **arrays)
        (out / "result.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
