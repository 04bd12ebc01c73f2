"""``python -m experiments.benchmark --preset record``: one MNIST epoch of the record preset, three ways.

The record preset (experiments/presets.py): 784-1024-1024-10 ReLU, dropout 0.4 on the hidden layers and 0.2 on
the input, max-norm 3.5 after each update, SGD with Nesterov momentum 0.9 at lr 0.05, 500 linear warm-up steps
then a cosine over the rest of 30 epochs, batch 128, globally standardised images (the constants below are read
from the preset's flags). Timed as

    fast       manual_backprop.fast.FastTrainer + manual_backprop.schedules.LRSchedule
    reference  the engine's MLP.loss_and_gradients(train=True) + manual_backprop.optim.SGD + LRSchedule + max_norm_
    pytorch    what a PyTorch user writes: nn.Sequential(nn.Dropout, nn.Linear, nn.ReLU, ...), F.cross_entropy,
               torch.optim.SGD(nesterov=True) (torch's default foreach), SequentialLR(LinearLR, CosineAnnealingLR), and
               ``weight.renorm_(2, 0, 3.5)`` under no_grad after each step

Each variant trains its own copy of the same initial weights over the same shuffled order, the default generator
seeded alike before each epoch (so all three draw the same dropout masks); the variants take turns epoch by
epoch and each one's fastest epoch counts. Peak memory is that of one step (benchmark_variants.peak_step_bytes).
After the timed epochs the fast path's weights are compared with the reference engine's (they train bitwise alike).
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from experiments.benchmark_variants import CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, clone_params, peak_step_bytes
from experiments.presets import PRESETS
from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.fast import FastTrainer
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import SGD
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from manual_backprop.schedules import LRSchedule

RECORD_VARIANTS = ("fast", "reference", "pytorch")
# Read from the preset's own flags, so that the benchmark times what --preset record trains.
_FLAGS = dict(zip(PRESETS["record"][1][::2], PRESETS["record"][1][1::2]))
SIZES = (784, *(int(width) for width in _FLAGS["--hidden"].split(",")), 10)
DROPOUT, INPUT_DROPOUT = float(_FLAGS["--dropout"]), float(_FLAGS["--input-dropout"])
MAX_NORM = float(_FLAGS["--max-norm"])
OPTIMIZER, LR, MOMENTUM = _FLAGS["--optimizer"], float(_FLAGS["--lr"]), float(_FLAGS["--momentum"])
BATCH_SIZE, WARMUP_STEPS, EPOCHS = int(_FLAGS["--batch-size"]), int(_FLAGS["--warmup-steps"]), int(_FLAGS["--epochs"])


def record_setup(device: str, dtype: str, train_images: int) -> tuple[MLPConfig, OptimizerConfig, ScheduleConfig]:
    """The preset's network, optimizer and schedule (t_max: the steps of 30 epochs after the warm-up)."""
    config = MLPConfig(sizes=SIZES, dropout=DROPOUT, input_dropout=INPUT_DROPOUT, max_norm=MAX_NORM, dtype=dtype,
                       device=device)
    steps = EPOCHS * -(-train_images // BATCH_SIZE)
    schedule = ScheduleConfig("cosine", t_max=max(steps - WARMUP_STEPS, 1), warmup_steps=WARMUP_STEPS)
    return config, OptimizerConfig(OPTIMIZER, lr=LR, momentum=MOMENTUM), schedule


class FastRecord:
    def __init__(self, config, params, optimizer, schedule):
        self.trainer = FastTrainer.from_optimizer_config(config, clone_params(params), optimizer)
        self.schedule = LRSchedule(schedule, optimizer.lr)
        self.params = self.trainer.params

    def step(self, X, y):
        self.trainer.lr = self.schedule.lr
        self.trainer.step(X, y)
        self.schedule.step()

    def release(self):
        self.trainer.release_workspaces()


class ReferenceRecord:
    def __init__(self, config, params, optimizer, schedule):
        self.config = config
        self.model = MLP(config, clone_params(params))
        self.optimizer = SGD(self.model.params, optimizer)
        self.schedule = LRSchedule(schedule, optimizer.lr)
        self.params = self.model.params

    def step(self, X, y):
        with torch.inference_mode():
            gradients = self.model.loss_and_gradients(X, y, train=True).gradients()
            self.optimizer.lr = self.schedule.lr
            self.optimizer.step(gradients)
            max_norm_(self.model.params, self.config.max_norm, self.config)
        self.schedule.step()

    def release(self):
        pass


class PyTorchRecord:
    def __init__(self, config, params, optimizer, schedule):
        layers = []
        for layer in range(1, config.num_layers + 1):
            linear = nn.Linear(config.sizes[layer - 1], config.sizes[layer], dtype=config.torch_dtype,
                               device=config.torch_device)
            with torch.no_grad():
                linear.weight.copy_(params[f"W{layer}"])
                linear.bias.copy_(params[f"b{layer}"])
            layers += [nn.Dropout(config.input_dropout if layer == 1 else config.dropout), linear]
            if layer < config.num_layers:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)
        self.linears = [module for module in self.model if isinstance(module, nn.Linear)]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=optimizer.lr, momentum=optimizer.momentum,
                                         nesterov=optimizer.name == "nesterov")
        warmup = torch.optim.lr_scheduler.LinearLR(self.optimizer, start_factor=schedule.warmup_start_factor,
                                                   total_iters=schedule.warmup_steps)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=schedule.t_max)
        self.scheduler = torch.optim.lr_scheduler.SequentialLR(self.optimizer, [warmup, cosine],
                                                               milestones=[schedule.warmup_steps])
        self.max_norm = config.max_norm
        self.model.train()

    @property
    def params(self):
        return {name: tensor for layer, linear in enumerate(self.linears, start=1)
                for name, tensor in ((f"W{layer}", linear.weight.detach()), (f"b{layer}", linear.bias.detach()))}

    def step(self, X, y):
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(X), y).backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            for linear in self.linears:
                linear.weight.renorm_(2, 0, self.max_norm)

    def release(self):
        self.optimizer.zero_grad()


BUILDERS = {"fast": FastRecord, "reference": ReferenceRecord, "pytorch": PyTorchRecord}


def record_epochs(train_x, train_y, names, repeats: int, device: str, dtype: str, seed: int = 0) -> dict:
    """{"images", "batch_size", "repeats", "seconds", "images_per_s", "peak_bytes", "fast_equals_reference"}."""
    config, optimizer, schedule = record_setup(device, dtype, len(train_x))
    params = init_parameters(config, torch.Generator().manual_seed(seed))
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).to(config.torch_device)
    variants = {name: BUILDERS[name](config, params, optimizer, schedule) for name in names}
    sync = torch.cuda.synchronize if config.torch_device.type == "cuda" else (lambda: None)
    seconds = {}
    for repeat in range(repeats):
        for name, variant in variants.items():
            torch.manual_seed(seed + 1 + repeat)  # the same masks for every variant in this epoch
            sync()
            started = time.perf_counter()
            for start in range(0, len(order), BATCH_SIZE):
                index = order[start:start + BATCH_SIZE]
                variant.step(train_x[index], train_y[index])
            sync()
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - started)
    same = None
    if "fast" in variants and "reference" in variants:
        fast, reference = variants["fast"].params, variants["reference"].params
        same = all(torch.equal(fast[name], reference[name]) for name in fast)
    X, y = train_x[order[:BATCH_SIZE]], train_y[order[:BATCH_SIZE]]

    class OneBatch:  # peak_step_bytes calls step() without arguments
        def __init__(self, variant):
            self.variant = variant

        def step(self):
            self.variant.step(X, y)

        def release(self):
            self.variant.release()

    peaks = {name: peak_step_bytes(OneBatch(variant), config.torch_device) for name, variant in variants.items()}
    return {"images": len(order), "batch_size": BATCH_SIZE, "repeats": repeats, "config": config.to_dict(),
            "seconds": seconds, "images_per_s": {name: len(order) / s for name, s in seconds.items()},
            "peak_bytes": peaks, "fast_equals_reference": same}


def format_record(result: dict) -> str:
    rates, peaks = result["images_per_s"], result["peak_bytes"]
    lines = [f"record preset, one MNIST epoch ({result['images']} images, batch {result['batch_size']}, fastest of "
             f"{result['repeats']}), {result['threads']} threads on {result['device']}, torch {result['torch']}",
             f"{'variant':>10} | {'images/s':>9} | {'epoch s':>8} | {'step peak MiB':>13}"]
    for name, rate in rates.items():
        lines.append(f"{name:>10} | {rate:>9.0f} | {result['seconds'][name]:>8.2f} | {peaks[name] / 2**20:>13.1f}")
    if "pytorch" in rates:
        for name in ("fast", "reference"):
            if name in rates:
                lines.append(f"{name} / pytorch: {rates[name] / rates['pytorch']:.2f}x the images/s, "
                             f"{peaks[name] / peaks['pytorch']:.2f}x the step peak")
    if result["fast_equals_reference"] is not None:
        lines.append(f"fast path weights after the epochs bitwise equal to the reference engine's: "
                     f"{result['fast_equals_reference']}")
    return "\n".join(lines)


def record_variant_names(text: str) -> list[str]:
    """"fast,pytorch" -> ["fast", "pytorch"]; a ValueError naming --record-variants for anything else."""
    names = [name for name in text.split(",") if name]
    if not names or set(names) - set(RECORD_VARIANTS):
        raise ValueError(f"--record-variants: expected names from {','.join(RECORD_VARIANTS)}; got {text!r}")
    return names


def record_main(args, config: MLPConfig) -> int:
    """--preset record: the epoch table of experiments/benchmark_record.py."""
    names = record_variant_names(args.record_variants)
    try:
        from mnist_data import load_splits
    except ImportError:  # before the data code moved into its own package
        from manual_backprop.datasets import load_splits
    splits = load_splits(args.epoch_dataset, args.data_dir, dtype=config.torch_dtype, device=config.device,
                         standardize="global")
    result = record_epochs(splits.train_x, splits.train_y, names, args.epoch_repeats, config.device, config.dtype)
    result.update({"device": str(config.torch_device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "memory_method": CUDA_MEMORY_METHOD if config.torch_device.type == "cuda" else CPU_MEMORY_METHOD})
    print(format_record(result))
    print(f"peak memory: {result['memory_method']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0
