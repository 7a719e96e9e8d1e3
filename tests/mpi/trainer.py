"""Run under ``mpiexec -n N``: the Trainer given a communicator, on the problems of scenarios.py.

    mpiexec -n N python tests/mpi/trainer.py equal OUT_DIR       the "sgd" and "adam" scenarios, 2 epochs
    mpiexec -n N python tests/mpi/trainer.py interrupt OUT_DIR   3 epochs of global batches of 16, saved to
                                                                 OUT_DIR/run.npz; the last rank alone is
                                                                 asked to stop during step STOP_AT
    mpiexec -n N python tests/mpi/trainer.py resume OUT_DIR      resume OUT_DIR/run.npz with N ranks to 3 epochs

The global batch is always 16 in ``interrupt`` and ``resume`` (16 // N per rank), so every rank count
trains the same model. Rank 0 writes OUT_DIR/<mode>-<N>.npz (parameters) and .json (losses, accuracies,
what each rank saw and wrote).
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios  # noqa: E402

from xpnet import distributed  # noqa: E402
from xpnet.backend import to_numpy  # noqa: E402
from xpnet.trainer import Trainer  # noqa: E402

GLOBAL_BATCH, STOP_AT, RESUME_SCENARIO = 16, 6, "adam"


def trainer(comm, name, per_rank, epochs, data_ranks=2, **options):
    """Every rank: the scenario's network (rank 0's weights) and a Trainer on the scenario's data for
    ``data_ranks`` ranks."""
    x, t = scenarios.data(name, data_ranks)
    distributed.seed_ranks(comm, scenarios.INIT_SEED)
    net = scenarios.network(name)
    run = Trainer(net, x, t, x, t, epochs=epochs, mini_batch_size=per_rank, optimizer=scenarios.optimizer(name),
                  verbose=False, seed=scenarios.SHUFFLE_SEED, comm=comm,
                  sync_batch_norm=scenarios.SCENARIOS[name]["batch_norm"] == "synchronized", **options)
    run.saves = 0
    save = run.save_checkpoint

    def counted(path):
        run.saves += 1
        save(path)

    run.save_checkpoint = counted
    return run


def summary(comm, run):
    return {"losses": run.train_loss_list + run.losses.values, "test_acc": run.test_acc_list,
            "epoch": run.current_epoch, "step": run.epoch_step, "examples": run.epoch_examples,
            "saves": comm.allgather_object(run.saves), "seed": comm.allgather_object(run.seed)}


def main(mode, out_dir):
    comm = distributed.init(device="cpu", check=False)
    out = Path(out_dir)
    arrays, report = {}, {}
    if mode == "equal":
        for name in ("sgd", "adam"):
            run = trainer(comm, name, scenarios.PER_RANK, scenarios.EPOCHS, data_ranks=comm.size).train()
            report[name] = summary(comm, run)
            arrays.update({f"{name}/{k}": to_numpy(v) for k, v in run.network.state().items()})
    elif mode == "interrupt":
        run = trainer(comm, RESUME_SCENARIO, GLOBAL_BATCH // comm.size, 3, checkpoint_path=out / "run.npz")
        step, calls = run.train_step, {"n": 0}

        def step_with_ctrl_c(x, t):
            calls["n"] += 1
            if calls["n"] == STOP_AT and comm.rank == comm.size - 1:
                run._interrupt.requested = True  # what a Ctrl-C during this step does, on this rank alone
            return step(x, t)

        run.train_step = step_with_ctrl_c
        try:
            run.train()
            report["stopped"] = False
        except KeyboardInterrupt:
            report["stopped"] = comm.allgather_object(True)
        report.update(summary(comm, run))
        report["steps"] = comm.allgather_object(calls["n"])
    elif mode == "resume":
        run = trainer(comm, RESUME_SCENARIO, GLOBAL_BATCH // comm.size, 3, resume=out / "run.npz").train()
        report.update(summary(comm, run))
        arrays.update({k: to_numpy(v) for k, v in run.network.state().items()})
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if comm.rank == 0:
        np.savez(out / f"{mode}-{comm.size}.npz", **arrays)
        (out / f"{mode}-{comm.size}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
